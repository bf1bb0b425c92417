// Linked into the suites registered with SINGLE_THREAD (tests/CMakeLists.txt): every test of the
// binary runs on one intra-op thread.
//
// Note [One intra-op thread]
// These suites run tiny models (widths of 64, a few thousand rows), whose operations take
// microseconds. With two OpenMP threads every operation ends in a barrier, and on a machine shared
// with other jobs the second thread is often descheduled, so the barrier waits a whole time slice:
// measured on the project's busy 2-core machine, a head test took 41 ms with one thread and 7.7 s
// with two (load 9), and the tokenizer suite ran about 20x slower. One thread also makes
// floating-point results independent of how the work is split, which the bit-identical resume
// and batch-invariance tests rely on.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

namespace {

class OneIntraOpThread : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};

[[maybe_unused]] ::testing::Environment* const kOneIntraOpThread =
    ::testing::AddGlobalTestEnvironment(new OneIntraOpThread);

}  // namespace
