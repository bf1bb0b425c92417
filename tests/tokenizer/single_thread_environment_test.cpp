// Runs the tokenizer tests with one intra-op thread.
//
// The tests use tiny models, whose operations take microseconds. With two OpenMP threads every
// operation ends in a barrier, and on a machine shared with other jobs the second thread is often
// descheduled, so the barrier waits a whole time slice: the suite ran about 20x slower with
// OMP_NUM_THREADS=2 than with 1 on the project's busy 2-core machine (70 s against 3.5 s for the
// short training test). One thread also makes the floating-point results independent of how the
// work is split.

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

namespace {

class SingleThreadEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};

[[maybe_unused]] ::testing::Environment* const single_thread_environment =
    ::testing::AddGlobalTestEnvironment(new SingleThreadEnvironment);

}  // namespace
