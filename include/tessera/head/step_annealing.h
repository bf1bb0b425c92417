#pragma once
// Diffusion step annealing (DiSA, Zhao et al. 2025): later tokens of a generation are
// constrained by everything already generated, so their per-token diffusion (or flow) needs
// fewer denoising steps. The number of steps follows a curve over generation progress, from
// first_steps at the first step to last_steps at the last (e.g. 50 → 5).
//
// With generation step s of T and Δ = first_steps − last_steps, the curves are DiSA's
// (MAR_DiSA models/diffloss.py), evaluated in its order of operations and truncated toward zero
// as Python's int(), so that the counts agree with it exactly:
//   linear     last + int((T − 1 − s)/(T − 1) · Δ)
//   cosine     last + int((cos(π·s/(T − 1)) + 1)/2 · Δ)
//   two_stage  first while s < (T − 1)/2, then last
// A generation of one step uses first_steps.

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"
#include "tessera/head/guidance.h"

namespace tessera {
/// How the step count goes from first_steps to last_steps.
enum class StepAnnealingCurve { linear, cosine, two_stage };

template <>
struct ConfigEnum<StepAnnealingCurve> {  /// Each value with its name.
  static constexpr std::pair<StepAnnealingCurve, const char*> values[] = {
      {StepAnnealingCurve::linear, "linear"},
      {StepAnnealingCurve::cosine, "cosine"},
      {StepAnnealingCurve::two_stage, "two_stage"}};
};  ///< The names of StepAnnealingCurve values in JSON configs.

struct StepAnnealing {
  bool enabled = false;  ///< off: the options' fixed step count
  int64_t first_steps = 50;  ///< steps at the first generation step
  int64_t last_steps = 5;  ///< steps at the last generation step
  StepAnnealingCurve curve = StepAnnealingCurve::linear;  ///< the curve in between

  /// The number of denoising steps at this point of the generation (>= 1).
  int64_t steps_at(const GenerationProgress& progress) const;

  /// Steps below 1 are errors.
  void validate() const;

  template <class Visitor>
  void visit(Visitor& v) {
    v("enabled", enabled);
    v("first_steps", first_steps);
    v("last_steps", last_steps);
    v("curve", curve);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};  ///< Fewer denoising steps as generation advances (continuous heads).

}  // namespace tessera
