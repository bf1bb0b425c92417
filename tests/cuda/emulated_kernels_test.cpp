// The CUDA attention kernels' own source, compiled as C++ and run on the CPU with the warp
// instructions emulated (tests/cuda/emulation/cuda_emulation.h), against float64: forward and
// backward on every problem of emulated_attention.h (causal, block-diagonal and block-causal over
// ragged segments, intervals with empty rows, a random dense mask, fewer queries than keys; between
// them every path of the kernels: full and partial chunks, the interval and the dense element
// rule, rows that see no key, ragged tiles), each in bf16 and fp16 with head dims 64 and 128. Runs
// without a GPU, in every build with CUDA; what it cannot check is the hardware's reading of the
// PTX (cuda_attention_test.cpp does, on a GPU).
//
// Every case runs, generated from problems() and kVariants, so a problem added there is tested
// here without a further line. The cost: the 24 cases take about 5 s on this 2-core machine, where
// the 3 cases ctest ran before took 12 s (both with a build beside them): the emulated threads
// became fibers (Note [Emulated threads are fibers]).

#include <gtest/gtest.h>

#include <cctype>
#include <cstddef>
#include <string>
#include <tuple>
#include <vector>

#include "common/prerequisite.h"

#ifdef TESSERA_WITH_CUDA

#define TESSERA_CUDA_EMULATION 1
#include "cuda/emulation/emulated_attention.h"

namespace tessera::cuda::emulation {
namespace {

const std::vector<Problem>& all_problems() {
  static const std::vector<Problem> all = problems();
  return all;
}

// (problem index, variant index)
class EmulatedCudaKernels : public ::testing::TestWithParam<std::tuple<size_t, size_t>> {};

TEST_P(EmulatedCudaKernels, ForwardAndBackwardMatchFloat64) {
  const auto [problem, variant] = GetParam();
  const Outcome o = run(all_problems()[problem], kVariants[variant], case_seed(problem, variant));
  EXPECT_TRUE(o.ok) << o.line;
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<size_t, size_t>>& info) {
  const auto [problem, variant] = info.param;
  std::string name;
  for (const char c : all_problems()[problem].name) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      name += c;
    } else if (!name.empty() && name.back() != '_') {
      name += '_';
    }
  }
  if (name.back() != '_') name += '_';
  const Variant v = kVariants[variant];
  return name + (v.bf16 ? "BFloat16" : "Float16") + "_HeadDim" + std::to_string(v.head_dim);
}

INSTANTIATE_TEST_SUITE_P(EveryProblemAndVariant, EmulatedCudaKernels,
                         ::testing::Combine(::testing::Range<size_t>(0, problems().size()),
                                            ::testing::Range<size_t>(0, std::size(kVariants))),
                         case_name);

}  // namespace
}  // namespace tessera::cuda::emulation

#else

TEST(EmulatedCudaKernels, BuiltWithoutCuda) {
  TESSERA_SKIP_FOR_MISSING(
      "nvcc: this build has no CUDA kernels (the CUDA toolkit was not found "
      "at configure time)");
}

#endif
