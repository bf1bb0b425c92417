#pragma once
// Next-scale prediction over continuous scales (FlowAR, Ren et al. 2024, "FlowAR: Scale-wise
// Autoregressive Image Generation Meets Flow Matching"): the scales of a continuous latent are
// generated coarse to fine, one whole scale per backbone call, each token of a scale drawn by a
// continuous head (flow matching, or diffusion) conditioned on its hidden row.
//
//   ContinuousNextScaleSchedule schedule({.patch_nums = {1, 2, 4, 8}});
//   ScheduleModels models{backbone, flow_head};     // a continuous tokenizer's 8x8 latent
//   ScheduleLoss l = schedule.loss(models, {kl_vae.encode(images), labels}, generator);
//   Tokens t = schedule.sample(models, labels, kl_vae.token_grids(32, 32), options, rngs);
//
// Note [Continuous next-scale layout]
// The tokenizer is single-scale (a KL-VAE's latent F, h = w = patch_nums.back()); the schedule
// makes the pyramid itself. Scale s is s_s = area_down(F, pn_s) (the average over each cell, FlowAR's
// coarser latents; the last scale is F itself). Unlike VAR there are no residuals:
// every scale is a complete coarser latent. The sequence is the pyramid, scale 0 first
// (TokenLayout::pyramid(patch_nums)); the rows of scale 0 are the backbone's condition rows (class
// embedding + pos_start, VAR's sos); the rows of scale s >= 1 hold up(s_{s−1}, pn_s), the previous
// scale upsampled to this scale's grid (`upsampling`: bilinear by default, or nearest).
// Every row of scale s predicts the token at the same position of s_s through the head.
// Training: the block-causal mask over the whole pyramid at once, inputs from the ground-truth
// scales (teacher forcing); the head's loss on every row, scale s weighing w_s (Note [Scale loss
// weighting]) spread evenly over its rows. Sampling: scale s is one backbone call on its rows (a
// KV cache holding the earlier scales, or the prefix recomputed), the head draws the scale's
// tokens with GenerationProgress.scale / num_scales set (Guidance::var_scale_ramp), and the drawn
// scale, upsampled, is the next scale's input. The result is the last scale (the latent).
//
// Differences from FlowAR: FlowAR's flow-matching module is a transformer over a whole scale
// whose noisy tokens see each other and take the backbone's output through spatially adaptive
// LayerNorm; here each token is drawn by the per-token head (MAR's AdaLN MLP), so tokens of one
// scale are independent given their hidden rows.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/schedule/next_scale_common.h"
#include "tessera/schedule/schedule.h"

namespace tessera {
/// How scale s − 1 is resized to scale s's grid.
enum class ScaleUpsampling { bilinear, nearest };

template <>
struct ConfigEnum<ScaleUpsampling> {  /// Each value with its name.
  static constexpr std::pair<ScaleUpsampling, const char*> values[] = {
      {ScaleUpsampling::bilinear, "bilinear"}, {ScaleUpsampling::nearest, "nearest"}};
};  ///< The names of ScaleUpsampling values in JSON configs.

struct ContinuousNextScaleScheduleConfig {
  /// Square scale sides, increasing; the last is the tokenizer's grid side (e.g. 1, 2, 4, 8, 16
  /// for a 16x16 latent, doubling as FlowAR's scales do).
  std::vector<int64_t> patch_nums = {1, 2, 4, 8, 16};
  /// How scale s − 1 is brought to scale s's grid as its input (align_corners false).
  ScaleUpsampling upsampling = ScaleUpsampling::bilinear;
  /// Training: how the scales share the loss (Note [Scale loss weighting]).
  ScaleLossWeighting loss_weighting = ScaleLossWeighting::per_token;
  /// Sampling defaults (use_kv_cache); a request may override them (GenerationOptions::schedule).
  ContinuousNextScaleSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("patch_nums", patch_nums);
    v("upsampling", upsampling);
    v("loss_weighting", loss_weighting);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< ContinuousNextScaleSchedule's scales and upsampling.

class ContinuousNextScaleSchedule final : public Schedule {
 public:
  explicit ContinuousNextScaleSchedule(ContinuousNextScaleScheduleConfig config = {});
  ///< A schedule with these options.
  const ContinuousNextScaleScheduleConfig& config() const { return config_; }  ///< The options.

  std::string name() const override { return "continuous_next_scale"; }
  /// Requires one square grid of side patch_nums.back(); a backbone over vectors of the head's C
  /// channels with segments = the pyramid and the first scale as its condition tokens; a
  /// continuous head over the backbone's width.
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Block-causal over the pyramid's scales.
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const ContinuousNextScaleSamplingOptions& sampling_options(
      const GenerationOptions& options) const;

  /// The scales of latents [B, h·w, C] (h = w = patch_nums.back()): [B, pn_s², C] each.
  std::vector<at::Tensor> scales(const at::Tensor& latent) const;
  /// The input rows of scale s >= 1 from scale s − 1 [B, pn_{s−1}², C]: [B, pn_s², C].
  at::Tensor scale_input(const at::Tensor& previous, int64_t s) const;

 protected:
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  /// One call per scale.
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  TokenLayout layout() const;
  ContinuousNextScaleScheduleConfig config_;
};  ///< Next-scale prediction over continuous token vectors (FlowAR-style scales).

}  // namespace tessera
