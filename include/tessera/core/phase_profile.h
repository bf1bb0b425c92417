#pragma once
// Where a sampling call spends its time and memory, without a profiler: the transformer
// (backbone), the head's projection and token draw, the tokenizer's decode, and everything else.
//
//   tessera::PhaseProfile profile;              // records on this thread while it lives
//   at::Tensor images = generator.sample(labels, request);
//   PhaseTimes t = profile.times();             // t.seconds(Phase::backbone), ..., t.total
//
// The library marks its phases with PhaseScope (Backbone::forward, CheckedHeadOptions::draw,
// Generator::sample's decode); a scope costs one thread-local read when no profile is recording.
// Invariant: only the outermost scope on a thread counts, so the phases never overlap and
// backbone + head + decode <= total; the rest is total minus the three.
//
// Times are host wall-clock times: on a GPU, work still queued when a scope ends is counted in a
// later phase (the sampling loops synchronise at every step, when they read the drawn tokens).

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace tessera {

/// What a PhaseScope counts its time toward.
enum class Phase : int {
  backbone = 0,  ///< the transformer (and its KV cache)
  head = 1,      ///< the head's projection and token draw (guidance, top-k/top-p, diffusion steps)
  decode = 2,    ///< the tokenizer's decode to images
};
inline constexpr int kNumPhases = 3;  ///< Phases in Phase (the rest is not one).
std::string_view to_string(Phase phase);  ///< "backbone", "head", "decode"

struct PhaseTimes {
  std::array<double, kNumPhases> phase_seconds{};  ///< indexed by Phase
  double total = 0;  ///< wall time from the profile's start (or reset) to the call of times()

  /// Seconds counted toward `phase`.
  double seconds(Phase phase) const { return phase_seconds[static_cast<int>(phase)]; }
  /// total minus the phases: schedule logic, copies, the tokenizer's per-step work.
  double rest() const;
};  ///< Seconds per phase of what a PhaseProfile recorded.

class PhaseProfile {
 public:
  /// Starts recording the scopes of the calling thread (nesting: the innermost profile records).
  PhaseProfile();
  ~PhaseProfile();
  PhaseProfile(const PhaseProfile&) = delete;
  PhaseProfile& operator=(const PhaseProfile&) = delete;

  PhaseTimes times() const;  ///< What was recorded since the start or the last reset.
  void reset();              ///< Zeroes the phases and restarts the total.

 private:
  friend class PhaseScope;
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
  std::array<double, kNumPhases> seconds_{};
  PhaseProfile* previous_;
  int depth_ = 0;  // scopes open on this thread; only depth 0 -> 1 starts a measurement
};  ///< Records the phases of the calling thread while it lives.

class PhaseScope {
 public:
  /// Starts counting toward `phase` if a profile records on this thread and no scope is open.
  explicit PhaseScope(Phase phase);
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  PhaseProfile* profile_;  // null when nothing records
  Phase phase_;
  bool outermost_ = false;
  PhaseProfile::Clock::time_point start_;
};  ///< Counts the time it lives toward `phase` of the recording PhaseProfile, if any.

}  // namespace tessera
