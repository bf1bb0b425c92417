#pragma once
// Classifier-free guidance: the conventions of the reference implementations as named options,
// and the progress descriptor they (and step annealing) read.
//
// Note [Guidance batch layout]
// Under guidance the backbone runs the conditional and the unconditional inputs in one batch and
// the head receives both halves stacked: rows [0, R) are conditional, rows [R, 2R) the same
// positions unconditional (LlamaGen, VAR and MAR all put the conditional half first). Within a
// half, rows are sample-major: sample b's T rows are rows [b·T, (b+1)·T). The head combines the
// two predictions of a row — logits, ε or velocity — as
//     guided = u + w·(c − u)
// with the weight w of the step, and returns R values (the conditional half's positions).
// Every convention below is such a weight; VAR's `(1+t)·c − t·u` is w = 1 + t. Where w is
// exactly 1 the head uses the conditional prediction alone (what LlamaGen does after its
// cfg_interval), so a cut-off is bit-identical to unguided sampling.
//
// | kind           | weight w at a step                                  | reference             |
// |----------------|-----------------------------------------------------|-----------------------|
// | none           | no unconditional half at all                        |                       |
// | constant       | s                                                   | LlamaGen `u+(c−u)·s`  |
// | var_scale_ramp | 1 + s·si/(S−1)            (scale si of S, S ≥ 2)    | VAR                   |
// | mar_token_ramp | 1 + (s−1)·(N − masked)/N  (masked after the step)   | MAR (after Muse)      |
// | cutoff         | s on steps [0, k), then 1                           | LlamaGen cfg_interval |
// | annealed       | m·s + (1−m)·s_final, m = cos(π/2·step/(T−1))        | MAGNeT                |

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"

namespace tessera {

/// Where generation stands when a head is called. Schedules fill the fields they know; guidance
/// conventions and step annealing read the ones they need (and check that they were filled).
struct GenerationProgress {
  int64_t step = 0;       ///< index of this step of the whole generation, 0-based
  int64_t num_steps = 1;  ///< steps of the whole generation
  int64_t scale = 0;      ///< next-scale prediction: index of the scale being generated
  int64_t num_scales = 1;  ///< next-scale prediction: number of scales
  /// Masked generation: tokens of one sample (MAR's seq_len) and how many of them are still masked
  /// after this step (MAR's mask_len). 0 tokens: not a masked schedule.
  int64_t num_tokens = 0;
  int64_t masked_after_step = 0;  ///< see num_tokens

  /// step / (num_steps − 1): 0 at the first step, 1 at the last; 0 when there is one step.
  double fraction() const;
  /// Throws tessera::Error for indices out of range.
  void validate() const;
};
/// The guidance conventions; Note [Guidance batch layout] says what each computes.
enum class GuidanceKind { none, constant, var_scale_ramp, mar_token_ramp, cutoff, annealed };

template <>
struct ConfigEnum<GuidanceKind> {  /// Each value with its name.
  static constexpr std::pair<GuidanceKind, const char*> values[] = {
      {GuidanceKind::none, "none"},
      {GuidanceKind::constant, "constant"},
      {GuidanceKind::var_scale_ramp, "var_scale_ramp"},
      {GuidanceKind::mar_token_ramp, "mar_token_ramp"},
      {GuidanceKind::cutoff, "cutoff"},
      {GuidanceKind::annealed, "annealed"}};
};  ///< The names of GuidanceKind values in JSON configs.

/// A guidance convention and its parameters; a plain value passed from the pipeline down to the
/// head. See Note [Guidance batch layout] for what each kind computes.
struct Guidance {
  GuidanceKind kind = GuidanceKind::none;  ///< the convention
  /// s in the table: LlamaGen's cfg_scale, VAR's and MAR's cfg, MAGNeT's max_cfg_coef.
  double scale = 1.0;
  /// annealed: the weight at the last step (MAGNeT's min_cfg_coef).
  double final_scale = 1.0;
  /// cutoff: steps [0, cutoff_step) are guided. LlamaGen's cfg_interval = k guides its prefill
  /// token and k + 1 more, i.e. cutoff_step = k + 2 when a raster schedule counts the prefill as
  /// step 0.
  int64_t cutoff_step = 0;

  static Guidance none() { return {}; }  ///< No guidance.
  static Guidance constant(double scale);  ///< Weight `scale` at every step.
  static Guidance var_scale_ramp(double cfg);  ///< VAR's ramp over scales up to `cfg`.
  static Guidance mar_token_ramp(double cfg);  ///< MAR's ramp over unmasked tokens up to `cfg`.
  static Guidance cutoff(double scale, int64_t cutoff_step);  ///< Guided before cutoff_step.
  static Guidance annealed(double initial_scale, double final_scale);  ///< MAGNeT's annealing.

  /// Whether the head receives a doubled batch (conditional half, then unconditional half).
  bool doubles_batch() const { return kind != GuidanceKind::none; }

  /// The weight w of the conditional prediction at this step (1 for `none`). Throws
  /// tessera::Error when the progress lacks what the kind needs (scales for var_scale_ramp, token
  /// counts for mar_token_ramp).
  double weight_at(const GenerationProgress& progress) const;

  /// Negative scales and cut-offs are errors.
  void validate() const;

  template <class Visitor>
  void visit(Visitor& v) {
    v("kind", kind);
    v("scale", scale);
    v("final_scale", final_scale);
    v("cutoff_step", cutoff_step);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};

/// u + w·(c − u); `cond` itself when w == 1.
at::Tensor apply_guidance(const at::Tensor& cond, const at::Tensor& uncond, double weight);

/// The conditional and unconditional halves of a doubled batch (rows [0, R) and [R, 2R)); throws
/// tessera::Error naming `what` when the row count is odd.
std::pair<at::Tensor, at::Tensor> split_guidance_batch(const at::Tensor& batch, const char* what);

}  // namespace tessera
