#include "tessera/core/phase_profile.h"

namespace tessera {

namespace {
thread_local PhaseProfile* recording = nullptr;
}  // namespace

std::string_view to_string(Phase phase) {
  switch (phase) {
    case Phase::backbone:
      return "backbone";
    case Phase::head:
      return "head";
    case Phase::decode:
      return "decode";
  }
  return "?";
}

double PhaseTimes::rest() const {
  double phases = 0;
  for (const double s : phase_seconds) phases += s;
  return total - phases;
}

PhaseProfile::PhaseProfile() : start_(Clock::now()), previous_(recording) { recording = this; }

PhaseProfile::~PhaseProfile() { recording = previous_; }

PhaseTimes PhaseProfile::times() const {
  PhaseTimes t;
  t.phase_seconds = seconds_;
  t.total = std::chrono::duration<double>(Clock::now() - start_).count();
  return t;
}

void PhaseProfile::reset() {
  seconds_ = {};
  start_ = Clock::now();
}

PhaseScope::PhaseScope(Phase phase) : profile_(recording), phase_(phase) {
  if (profile_ == nullptr) return;
  outermost_ = profile_->depth_++ == 0;
  if (outermost_) start_ = PhaseProfile::Clock::now();
}

PhaseScope::~PhaseScope() {
  if (profile_ == nullptr) return;
  --profile_->depth_;
  if (outermost_) {
    profile_->seconds_[static_cast<int>(phase_)] +=
        std::chrono::duration<double>(PhaseProfile::Clock::now() - start_).count();
  }
}

}  // namespace tessera
