#pragma once
// HMAR (NVlabs/HMAR, models/hmar.py, mp_trainer.py): next-scale prediction with a Markovian,
// block-diagonal mask and optional masked refinement inside a scale.
//
// Note [HMAR's Markov step]
// The layout and inputs are VAR's (Note [Next-scale layout] in next_scale_schedule.h), but each
// scale attends only to itself (segment(k) == segment(q): HMAR's attn_bias_for_masking with
// d == dT). Everything scale s knows of the earlier scales arrives through its input
// area_down(f̂_{<s}, pn_s), which already sums them; so sampling needs no KV cache: scale s is one
// backbone call over that scale's rows alone, and attention costs Σ n_s² instead of VAR's
// Σ n_s·(n_0 + … + n_s) (a quarter of it on the 680-token pyramid).
//
// Note [HMAR masked refinement]
// HMAR can redraw the least confident tokens of a scale by masked prediction (its "mask" sampling
// option and its masked fine-tuning, hmar-finetune-mask-*.yaml). Sampling: after the next-scale
// pass of scale s draws all n tokens, each with its probability p under the distribution it was
// drawn from (HeadSample::probabilities: after guidance, temperature, top-k and top-p; HMAR ranks
// by the guided softmax before top-k/top-p, which orders the kept tokens the same way), the
// `masked_after(0)` tokens of lowest p are re-masked (per sample; no Gumbel noise);
// refinement step r = 1..R_s runs the backbone on the scale's rows with the known tokens visible
// and the masked ones replaced by the mask embedding, draws every masked position, and re-masks
// the `masked_after(r)` least confident of those just drawn; the last step commits all. The counts
// come from masking.h (Note [Masked decoding counts]) with T = R_s + 1 steps, step 0 being the
// next-scale pass, so they depend only on (n, T, step). HMAR's sampler takes explicit counts per
// step (mask_schedule [[1], [1, 3], [1, 1, 2, 5], [16], …]); a curve gives the same kind of
// decreasing masked fraction from one number per scale. R_s is chosen at sampling time
// (HmarSamplingOptions::refinement_steps, per request), no retraining. HMAR runs its refinement with the
// guidance weight 1 + cfg·1e-6, i.e. unguided: refinement_guidance false (the default) runs it on
// the conditional batch alone.
// Inputs: HMAR embeds a position of a scale under refinement as
//     word_embed(area_down(f̂_{<s}, pn_s)) + (mask_embed            if masked
//                                           word_embed(own_s)      otherwise) + bias
// where own_s = area_down(Phi_s(up(embed(ids_s))), pn_s) is the token's own contribution to f̂ seen
// at its scale (quant.py, get_next_mask_input / idxBl_to_mask_input). Tessera's backbone has one
// Linear input projection and no mask token, so the schedule passes Cvae + 1 channels,
//     [area_down(f̂_{<s}) + own_s·(1 − m), m]      (m = 1 at a masked position),
// and Linear(W, w_m, b) of that is W·(ns + own) + b at a known position and W·ns + w_m + b at a
// masked one: exactly HMAR's parametrisation, with the indicator's weight column w_m as HMAR's
// mask_embed. The next-scale pass passes [area_down(f̂_{<s}), 0] (HMAR's next-scale input, no mask
// embedding). A backbone with input_channels = Cvae still works for plain next-scale training and
// sampling; refinement and masked training need Cvae + 1.
// Training (masked_training_fraction > 0): a batch is, with that probability, a masked-prediction
// batch as mp_trainer.py's: one ratio p ~ U(0, 1) per batch, ceil(n_s·p) positions of every scale
// s >= 1 masked (drawn per sample here; HMAR draws one set for the whole batch), the inputs above,
// the block-diagonal mask, and the cross-entropy of the masked positions only, each weighing the
// same (HMAR's "mask_unweighted"). HMAR fine-tunes a separate copy of its last blocks and head for
// this with the rest frozen. A backbone with branch blocks (BackboneConfig::branch_blocks) and a
// generator with a refinement head (GeneratorConfig::refinement_head) reproduce that split — the
// refinement pass and masked training batches run the branch blocks and the refinement head, the
// next-scale pass the ordinary ones (HMAR's base_blocks + ns_blocks / base_blocks + mask_blocks,
// the presets hmar-d16 …). Without them the same backbone and head learn both tasks: mix them
// (0 < fraction < 1) or freeze parameters in the trainer.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/schedule/masking.h"
#include "tessera/schedule/next_scale_common.h"
#include "tessera/schedule/schedule.h"

namespace tessera {

struct HmarScheduleConfig {
  // --- training ---
  /// See Note [Scale loss weighting]; HMAR trains with "lognorm".
  ScaleLossWeighting loss_weighting = ScaleLossWeighting::lognormal;
  /// Probability that a training batch is a masked-prediction batch (Note [HMAR masked
  /// refinement]); 0: plain next-scale training. Needs a backbone with Cvae + 1 input channels.
  double masked_training_fraction = 0.0;
  /// Sampling defaults (refinement_steps, refinement_curve, refinement_guidance, mask_schedule); a
  /// request may override them (GenerationOptions::schedule).
  HmarSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("loss_weighting", loss_weighting);
    v("masked_training_fraction", masked_training_fraction);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  /// Ranges that do not depend on the pyramid.
  void validate() const;
};  ///< HmarSchedule's options.

class HmarSchedule final : public Schedule {
 public:
  explicit HmarSchedule(HmarScheduleConfig config = {});  ///< A schedule with these options.

  const HmarScheduleConfig& config() const { return config_; }  ///< Its options.
  void set_step_observer(ScaleStepObserver observer) { observer_ = std::move(observer); }
  ///< Called with every step of sample(); empty: none.
  std::string name() const override { return "hmar"; }
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Block-diagonal over the pyramid's scales.
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  /// Terms: "cross_entropy", "cross_entropy_scale_<s>" (scales with predicted rows), and
  /// "mask_ratio" (the batch's p; 0 for a next-scale batch).
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  /// Validates the options and their refinement plan against the pyramid (refinement_plan).
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const HmarSamplingOptions& sampling_options(const GenerationOptions& options) const;

  /// The refinement steps of each scale for these grids under these options (refinement_steps
  /// padded with zeros); throws tessera::Error for a count the grids cannot take.
  std::vector<int64_t> refinement_plan(const std::vector<TokenGridSize>& grids,
                                       const GenerationOptions& options = {}) const;
  /// Positions of scale s (n tokens, T steps) still masked after step r under `sampling`;
  /// `masked_before` is the count after step r − 1 (n before the first).
  static int64_t masked_after(const HmarSamplingOptions& sampling, int64_t s, int64_t n, int64_t r,
                              int64_t T, int64_t masked_before);

 protected:
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  /// One call per scale plus one per refinement step.
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  HmarScheduleConfig config_;
  ScaleStepObserver observer_;
};  ///< HMAR: next-scale prediction with a Markovian mask and masked refinement of each scale.

}  // namespace tessera
