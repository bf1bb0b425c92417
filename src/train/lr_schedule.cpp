#include "tessera/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tessera/core/error.h"

namespace tessera {

void LrScheduleConfig::validate() const {
  TESSERA_CHECK(warmup_steps >= 0, "lr_schedule.warmup_steps must be >= 0, got {}", warmup_steps);
  TESSERA_CHECK(min_ratio >= 0 && min_ratio <= 1, "lr_schedule.min_ratio must be in [0, 1], got {}",
                min_ratio);
}

double lr_factor(const LrScheduleConfig& config, int64_t step, int64_t total_steps) {
  TESSERA_CHECK(step >= 0, "lr_factor: step must be >= 0, got {}", step);
  TESSERA_CHECK(total_steps >= 0, "lr_factor: total_steps must be >= 0, got {}", total_steps);
  if (step < config.warmup_steps) {
    return static_cast<double>(step + 1) / static_cast<double>(config.warmup_steps);
  }
  if (config.kind == LrScheduleKind::constant) return 1.0;
  const int64_t decay_steps = total_steps - config.warmup_steps;
  if (decay_steps <= 0) return 1.0;
  const double progress =
      std::min(1.0, static_cast<double>(step - config.warmup_steps) / static_cast<double>(decay_steps));
  return config.min_ratio +
         (1.0 - config.min_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace tessera
