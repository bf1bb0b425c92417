// PhaseProfile / PhaseScope (tessera/core/phase_profile.h) and the resident-memory readers
// (tessera/core/process_memory.h): what is counted, what nests, and that a touched allocation
// shows in the peak.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "tessera/core/phase_profile.h"
#include "tessera/core/process_memory.h"

namespace tessera {
namespace {

void busy_for(std::chrono::milliseconds duration) { std::this_thread::sleep_for(duration); }

// Lower bounds only: a sleeping thread is never woken early, but may be woken late.
TEST(PhaseProfile, CountsEachScopeTowardItsPhase) {
  PhaseProfile profile;
  {
    const PhaseScope scope(Phase::backbone);
    busy_for(std::chrono::milliseconds(30));
  }
  {
    const PhaseScope scope(Phase::decode);
    busy_for(std::chrono::milliseconds(20));
  }
  busy_for(std::chrono::milliseconds(10));  // in no scope: the rest
  const PhaseTimes t = profile.times();
  EXPECT_GE(t.seconds(Phase::backbone), 0.030);
  EXPECT_GE(t.seconds(Phase::decode), 0.020);
  EXPECT_EQ(t.seconds(Phase::head), 0.0);
  EXPECT_GE(t.rest(), 0.010);
  EXPECT_GE(t.total, t.seconds(Phase::backbone) + t.seconds(Phase::decode));
}

// A head draw inside a backbone scope (or the reverse) is counted once, by the outermost scope.
TEST(PhaseProfile, OnlyTheOutermostScopeCounts) {
  PhaseProfile profile;
  {
    const PhaseScope outer(Phase::head);
    const PhaseScope inner(Phase::backbone);
    busy_for(std::chrono::milliseconds(20));
  }
  const PhaseTimes t = profile.times();
  EXPECT_GE(t.seconds(Phase::head), 0.020);
  EXPECT_EQ(t.seconds(Phase::backbone), 0.0);
}

TEST(PhaseProfile, ScopesWithoutAProfileAndResetRecordNothing) {
  {
    const PhaseScope unobserved(Phase::backbone);  // no profile: a no-op
  }
  PhaseProfile profile;
  {
    const PhaseScope scope(Phase::decode);
    busy_for(std::chrono::milliseconds(5));
  }
  profile.reset();
  EXPECT_EQ(profile.times().seconds(Phase::decode), 0.0);
  // A nested profile records its own scopes and hands recording back when it ends.
  {
    PhaseProfile inner;
    {
      const PhaseScope scope(Phase::head);
      busy_for(std::chrono::milliseconds(5));
    }
    EXPECT_GE(inner.times().seconds(Phase::head), 0.005);
  }
  EXPECT_EQ(profile.times().seconds(Phase::head), 0.0);
  {
    const PhaseScope scope(Phase::head);
    busy_for(std::chrono::milliseconds(5));
  }
  EXPECT_GE(profile.times().seconds(Phase::head), 0.005);
  EXPECT_EQ(to_string(Phase::backbone), "backbone");
  EXPECT_EQ(to_string(Phase::head), "head");
  EXPECT_EQ(to_string(Phase::decode), "decode");
}

// 256 MiB written page by page raise the peak by at least that much over the reset point.
TEST(ProcessMemory, ATouchedAllocationRaisesThePeak) {
  if (resident_bytes() == 0) GTEST_SKIP() << "/proc/self/status is not readable here";
  release_free_memory();
  ASSERT_TRUE(reset_peak_resident_bytes()) << "the kernel refused /proc/self/clear_refs";
  const int64_t before = peak_resident_bytes();
  constexpr size_t kBytes = size_t{256} << 20;
  {
    const std::unique_ptr<char[]> block(new char[kBytes]);
    std::memset(block.get(), 1, kBytes);
    EXPECT_GE(resident_bytes(), before + static_cast<int64_t>(kBytes) * 9 / 10);
  }
  EXPECT_GE(peak_resident_bytes(), before + static_cast<int64_t>(kBytes) * 9 / 10);
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer keeps freed blocks in its quarantine, resident";
#endif
  release_free_memory();
  ASSERT_TRUE(reset_peak_resident_bytes());
  EXPECT_LT(peak_resident_bytes(), before + static_cast<int64_t>(kBytes) / 2)
      << "the freed block still counts after release and reset";
}

}  // namespace
}  // namespace tessera
