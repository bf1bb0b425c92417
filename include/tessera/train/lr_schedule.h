#pragma once
// Learning-rate schedules: the factor by which the peak learning rate is scaled at a step.
//
//   constant: linear warm-up from 0, then 1.
//   cosine:   linear warm-up from 0 to 1 over warmup_steps, then a half cosine from 1 down to
//             min_ratio at total_steps:  min_ratio + (1 − min_ratio)·½(1 + cos(π·p)),
//             p = (step − warmup) / (total − warmup), held at min_ratio after total_steps.
//
// Steps count from 0 (the first update uses step 0). During warm-up the factor is
// (step + 1) / warmup_steps, so the first update already moves (a factor of 0 would waste it) and
// the last warm-up step reaches 1.

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"

namespace tessera {
/// The learning-rate curve after warm-up.
enum class LrScheduleKind { constant, cosine };

template <>
struct ConfigEnum<LrScheduleKind> {  /// Each value with its name.
  static constexpr std::pair<LrScheduleKind, const char*> values[] = {
      {LrScheduleKind::constant, "constant"}, {LrScheduleKind::cosine, "cosine"}};
};  ///< The names of LrScheduleKind values in JSON configs.

struct LrScheduleConfig {
  LrScheduleKind kind = LrScheduleKind::cosine;  ///< constant or cosine
  int64_t warmup_steps = 0;  ///< steps of linear warm-up from 0
  /// The floor of the cosine, as a fraction of the peak learning rate.
  double min_ratio = 0.0;

  template <class Visitor>
  void visit(Visitor& v) {
    v("kind", kind);
    v("warmup_steps", warmup_steps);
    v("min_ratio", min_ratio);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< The learning rate's schedule over a run.

/// The factor in [0, 1] at `step` (0-based) of a run of `total_steps` optimizer steps.
double lr_factor(const LrScheduleConfig& config, int64_t step, int64_t total_steps);

}  // namespace tessera
