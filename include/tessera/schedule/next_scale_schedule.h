#pragma once
// VAR's next-scale prediction (FoundationVision/VAR, models/var.py): the token pyramid of a
// multi-scale VQ-VAE is generated coarse to fine, one whole scale per backbone call.
//
//   NextScaleSchedule schedule;                      // VAR: block-causal, KV cache
//   ScheduleModels models{backbone, head, &vqvae};   // vqvae: a MultiScaleVqVae
//   ScheduleLoss l = schedule.loss(models, {tokens, labels}, generator);
//   Tokens t = schedule.sample(models, labels, vqvae.token_grids(32, 32),
//                              {.guidance = Guidance::var_scale_ramp(1.5)}, rngs);
//
// Note [Next-scale layout]
// The sequence is the pyramid, scale 0 first: segment s holds the pn_s² tokens of scale s
// (TokenLayout::pyramid), and the backbone's segments must be exactly these (var_style_config).
// The first scale's rows are the backbone's condition rows (class embedding + pos_start, VAR's
// sos); the rows of scale s >= 1 hold word_embed(area_down(f̂_{<s}, pn_s)), where f̂_{<s} is the
// tokenizer's reconstruction from the ids of scales 0..s−1 (Note [Multi-scale residual
// quantisation] in tokenizer/multiscale_vq_vae.h). Every row of scale s predicts the id at the
// same position of scale s. Training: the block-causal mask (segment(k) <= segment(q), VAR's
// attn_bias_for_masking) over the whole pyramid at once, with the teacher-forcing inputs from the
// ground-truth ids; the loss is the cross-entropy of every position of every scale, weighted per
// NextScaleScheduleConfig::loss_weighting (VAR: per token). Sampling: scale s is one backbone call
// on its rows only, its queries against a KV cache holding every earlier scale (the full mask's
// rows(begin, end)); the head draws the scale's ids with guidance weight read from
// GenerationProgress.scale / num_scales (Guidance::var_scale_ramp: VAR's t = cfg·s/(S−1)); the ids
// update f̂ (add_scale_ids) and f̂ gives the next scale's inputs (next_scale_input).
//
// Requirements (check_models): the tokenizer is a MultiScaleVqVae whose patch_nums are the grids
// (square, in order); the backbone takes vectors of the tokenizer's Cvae channels, has one
// segment per scale and the first scale as its condition tokens; the head is discrete over the
// tokenizer's codebook. The schedule covers discrete scales only: a continuous head or tokenizer
// is rejected with an error; continuous scales (FlowAR) are ContinuousNextScaleSchedule's.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tessera/schedule/next_scale_common.h"
#include "tessera/schedule/schedule.h"

namespace tessera {

struct NextScaleScheduleConfig {
  /// Training: how the scales share the loss. See Note [Scale loss weighting].
  ScaleLossWeighting loss_weighting = ScaleLossWeighting::per_token;
  /// Sampling defaults (use_kv_cache); a request may override them (GenerationOptions::schedule).
  NextScaleSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("loss_weighting", loss_weighting);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const {}  ///< Every value is valid.
};  ///< NextScaleSchedule's options.

class NextScaleSchedule final : public Schedule {
 public:
  explicit NextScaleSchedule(NextScaleScheduleConfig config = {});  ///< With these options.

  const NextScaleScheduleConfig& config() const { return config_; }  ///< Its options.
  /// Called after every sampling step; see ScaleStepRecord.
  void set_step_observer(ScaleStepObserver observer) { observer_ = std::move(observer); }

  std::string name() const override { return "next_scale"; }
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Block-causal over the pyramid's scales.
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  /// Terms: "cross_entropy" (the weighted loss) and "cross_entropy_scale_<s>" per scale.
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const NextScaleSamplingOptions& sampling_options(const GenerationOptions& options) const;

 protected:
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  /// One call per scale.
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  NextScaleScheduleConfig config_;
  ScaleStepObserver observer_;
};  ///< VAR: next-scale prediction over a pyramid of discrete token maps.

}  // namespace tessera
