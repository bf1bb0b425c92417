#include "tessera/head/step_annealing.h"

#include <cmath>
#include <numbers>

#include "tessera/core/error.h"

namespace tessera {

void StepAnnealing::validate() const {
  TESSERA_CHECK(first_steps >= 1, "step annealing: first_steps must be >= 1, got {}",
                first_steps);
  TESSERA_CHECK(last_steps >= 1, "step annealing: last_steps must be >= 1, got {}", last_steps);
}

int64_t StepAnnealing::steps_at(const GenerationProgress& progress) const {
  validate();
  progress.validate();
  const double span = static_cast<double>(first_steps - last_steps);
  if (progress.num_steps == 1) return first_steps;  // the first step is also the last
  // The expressions are evaluated in DiSA's order, so that truncation agrees with it exactly.
  const auto step = static_cast<double>(progress.step);
  const auto upper_step = static_cast<double>(progress.num_steps - 1);
  switch (curve) {
    case StepAnnealingCurve::linear:
      return last_steps + static_cast<int64_t>(std::trunc((upper_step - step) / upper_step * span));
    case StepAnnealingCurve::cosine:
      return last_steps + static_cast<int64_t>(std::trunc(
                              (std::cos(std::numbers::pi * step / upper_step) + 1.0) / 2.0 * span));
    case StepAnnealingCurve::two_stage:
      return step < upper_step / 2.0 ? first_steps : last_steps;
  }
  TESSERA_FAIL("step annealing: unknown curve {}", static_cast<int>(curve));
}

}  // namespace tessera
