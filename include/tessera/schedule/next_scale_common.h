#pragma once
// What the next-scale schedules (VAR's NextScaleSchedule, HMAR's HmarSchedule) share: how a
// training loss weighs the scales of the pyramid, and a record of each sampling step that tests
// and visualisations can observe.
//
// Note [Scale loss weighting]
// VAR averages the cross-entropy over every token of the pyramid (trainer.py: loss_weight =
// 1/L per token), so a scale weighs in proportion to its token count: the last scale of the
// 680-token pyramid carries 256/680 of the loss. HMAR's trainer offers two alternatives
// (trainer.py, get_loss_weight): "equal" — every scale the same total weight 1/S — and "lognorm",
// its default for training: with ratios r_i = pn_i / pn_{S−1}, their mean m and sample standard
// deviation σ (ddof 1), scale i gets the standard normal density at z_i = (r_{S−1−i} − m)/σ
// (the ratios taken in reverse order), normalised to sum to one. Within a scale every token
// weighs the scale's total divided by its count in all three rules, so a weighted loss is
// Σ_s w_s · (mean cross-entropy of scale s).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "tessera/core/config.h"

namespace tessera {
/// How the scales of a pyramid share the training loss.
enum class ScaleLossWeighting {
  per_token,  ///< VAR: every token the same weight (a scale weighs by its token count)
  per_scale,  ///< HMAR's "equal": every scale the same total weight
  lognormal,  ///< HMAR's "lognorm" (its training default)
};

template <>
struct ConfigEnum<ScaleLossWeighting> {  /// Each value with its name.
  static constexpr std::pair<ScaleLossWeighting, const char*> values[] = {
      {ScaleLossWeighting::per_token, "per_token"},
      {ScaleLossWeighting::per_scale, "per_scale"},
      {ScaleLossWeighting::lognormal, "lognormal"}};
};  ///< The names of ScaleLossWeighting values in JSON configs.

/// The total weight of each scale (summing to 1) for a pyramid of these sides, coarse to fine.
/// See Note [Scale loss weighting]. Throws tessera::Error for an empty pyramid, a side < 1, or
/// lognormal with fewer than two scales (σ is undefined).
std::vector<double> scale_loss_weights(ScaleLossWeighting weighting,
                                       const std::vector<int64_t>& patch_nums);

/// One backbone evaluation of a next-scale sampler, as the schedule saw it. Tensors are on the CPU,
/// [B, n] for the n positions of `scale`.
struct ScaleStepRecord {
  int64_t step = 0;        ///< index among the generation's num_steps() evaluations
  int64_t scale = 0;  ///< the scale the step generated
  int64_t refinement = 0;  ///< 0: the scale's next-scale pass; r >= 1: HMAR's r-th refinement
  at::Tensor ids{};            ///< int64: the scale's ids after this step (masked ones included)
  at::Tensor probabilities{};  ///< float: the probability of each id as last drawn
  at::Tensor committed{};      ///< bool: positions committed by this step (never redrawn later)
  at::Tensor masked{};         ///< bool: positions still masked after this step (to be redrawn)
};

/// Called once per step, after the step's commit; a test's or a viewer's hook. Empty: no calls.
using ScaleStepObserver = std::function<void(const ScaleStepRecord&)>;

}  // namespace tessera
