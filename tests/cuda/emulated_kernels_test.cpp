// The CUDA attention kernels' own source, compiled as C++ and run on CPU threads with the warp
// instructions emulated (tests/cuda/emulation/cuda_emulation.h), against float64: forward and
// backward on a few small problems that between them take every path of the kernels (full and
// partial chunks, the interval and the dense element rule, rows that see no key, ragged tiles,
// bf16 and fp16, D 64 and 128). Runs without a GPU, in every build with CUDA; what it cannot
// check is the hardware's reading of the PTX (cuda_attention_test.cpp does, on a GPU).
// tests/cuda/emulation/run runs the full set of cases.

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#ifdef TESSERA_WITH_CUDA

#define TESSERA_CUDA_EMULATION 1
#include "cuda/emulation/emulated_attention.h"

namespace tessera::cuda::emulation {
namespace {

const Problem& problem(const std::string& name) {
  static const std::vector<Problem> all = problems();
  for (const Problem& p : all) {
    if (p.name == name) return p;
  }
  throw std::runtime_error("no emulation problem named " + name);
}

TEST(EmulatedCudaKernels, DenseMaskBFloat16HeadDim64) {
  const Outcome o = run<__nv_bfloat16, 64>(problem("dense random"), 101);
  EXPECT_TRUE(o.ok) << o.line;
}

TEST(EmulatedCudaKernels, BlockCausalSegmentsBFloat16HeadDim64) {
  const Outcome o = run<__nv_bfloat16, 64>(problem("block_causal (segments)"), 102);
  EXPECT_TRUE(o.ok) << o.line;
}

TEST(EmulatedCudaKernels, IntervalsWithEmptyRowsFloat16HeadDim128) {
  const Outcome o = run<__half, 128>(problem("intervals with empty rows"), 103);
  EXPECT_TRUE(o.ok) << o.line;
}

}  // namespace
}  // namespace tessera::cuda::emulation

#else

TEST(EmulatedCudaKernels, BuiltWithoutCuda) { GTEST_SKIP() << "this build has no CUDA kernels"; }

#endif
