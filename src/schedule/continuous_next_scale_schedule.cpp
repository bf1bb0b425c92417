#include "tessera/schedule/continuous_next_scale_schedule.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <optional>

#include "schedule/next_scale_detail.h"
#include "schedule/schedule_util.h"
#include "tessera/core/error.h"
#include "tessera/nn/guidance_batch.h"

namespace tessera {

using namespace schedule_detail;

namespace {

constexpr const char* kWho = "continuous_next_scale schedule";

// [B, n², C] (raster order) ↔ [B, C, n, n].
at::Tensor to_image(const at::Tensor& rows, int64_t side) {
  return rows.reshape({rows.size(0), side, side, rows.size(2)}).permute({0, 3, 1, 2});
}
at::Tensor to_rows(const at::Tensor& image) {
  const int64_t B = image.size(0), C = image.size(1);
  return image.permute({0, 2, 3, 1}).reshape({B, image.size(2) * image.size(3), C});
}

}  // namespace

void ContinuousNextScaleScheduleConfig::validate() const {
  TESSERA_CHECK(!patch_nums.empty(), "{}: patch_nums is empty", kWho);
  for (size_t s = 0; s < patch_nums.size(); ++s) {
    TESSERA_CHECK(patch_nums[s] >= 1, "{}: patch_nums[{}] is {}; sides must be >= 1", kWho, s,
                  patch_nums[s]);
    TESSERA_CHECK(s == 0 || patch_nums[s] > patch_nums[s - 1],
                  "{}: patch_nums must increase, got {} after {}", kWho, patch_nums[s],
                  patch_nums[s - 1]);
  }
}

ContinuousNextScaleSchedule::ContinuousNextScaleSchedule(ContinuousNextScaleScheduleConfig config)
    : config_(std::move(config)) {
  config_.validate();
}


TokenLayout ContinuousNextScaleSchedule::layout() const {
  return TokenLayout::pyramid(config_.patch_nums);
}

void ContinuousNextScaleSchedule::check_models(const ScheduleModels& models,
                                               const std::vector<TokenGridSize>& grids) const {
  const TokenGridSize grid = single_grid(grids, kWho);
  check_no_decoder(models, kWho);
  check_no_hmar_tail(models, kWho);
  const int64_t last = config_.patch_nums.back();
  TESSERA_CHECK(grid.height == last && grid.width == last,
                "{}: the tokenizer's grid is {}x{} but the last scale of patch_nums is {}x{}", kWho,
                grid.height, grid.width, last, last);
  const BackboneConfig& c = models.backbone.config();
  TESSERA_CHECK(models.head.kind() != HeadKind::discrete,
                "{}: needs a continuous head (flow_matching or diffusion), got discrete; discrete "
                "scales are the next_scale schedule's",
                kWho);
  TESSERA_CHECK(models.head.hidden_width() == c.width,
                "{}: the head expects hidden width {}, the backbone has {}", kWho,
                models.head.hidden_width(), c.width);
  const int64_t C = models.head.token_channels();
  TESSERA_CHECK(c.input == InputKind::vectors && c.input_channels == C,
                "{}: the backbone must take vectors of the head's {} token channels (the upsampled "
                "previous scale), got {}",
                kWho, C,
                backbone_input_text(c));
  TESSERA_CHECK(models.backbone.layout() == layout(),
                "{}: for patch_nums {} the backbone's segments must be the pyramid {}, got {}",
                kWho, fmt::join(config_.patch_nums, ","), layout().to_string(),
                models.backbone.layout().to_string());
  const int64_t first = config_.patch_nums.front() * config_.patch_nums.front();
  TESSERA_CHECK(c.condition_tokens == first,
                "{}: the first scale's {} rows must be the backbone's condition rows, but it has "
                "condition_tokens {}",
                kWho, first, c.condition_tokens);
}

BlockMask ContinuousNextScaleSchedule::training_mask(const std::vector<TokenGridSize>&) const {
  return BlockMask::block_causal(layout());
}

int64_t ContinuousNextScaleSchedule::num_steps_impl(const std::vector<TokenGridSize>&,
                                                    const GenerationOptions&) const {
  return static_cast<int64_t>(config_.patch_nums.size());
}

const ContinuousNextScaleSamplingOptions& ContinuousNextScaleSchedule::sampling_options(
    const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, "continuous_next_scale");
}

void ContinuousNextScaleSchedule::check_sampling(const std::vector<TokenGridSize>&,
                                                 const GenerationOptions& options) const {
  sampling_options(options).validate();
}

std::vector<at::Tensor> ContinuousNextScaleSchedule::scales(const at::Tensor& latent) const {
  const int64_t side = config_.patch_nums.back();
  TESSERA_CHECK(latent.dim() == 3 && latent.size(1) == side * side,
                "{}: expected latents [B, {}, C] ({}x{} grid), got {}", kWho, side * side, side,
                side, latent.sizes());
  const at::Tensor image = to_image(latent, side);
  std::vector<at::Tensor> out;
  for (int64_t pn : config_.patch_nums) {
    out.push_back(pn == side ? latent : to_rows(at::adaptive_avg_pool2d(image, {pn, pn})));
  }
  return out;
}

at::Tensor ContinuousNextScaleSchedule::scale_input(const at::Tensor& previous, int64_t s) const {
  TESSERA_CHECK(s >= 1 && s < static_cast<int64_t>(config_.patch_nums.size()),
                "{}: scale {} has no input from a previous scale", kWho, s);
  const int64_t from = config_.patch_nums[s - 1], to = config_.patch_nums[s];
  const at::Tensor image = to_image(previous, from);
  const at::Tensor up = config_.upsampling == ScaleUpsampling::bilinear
                            ? at::upsample_bilinear2d(image, {to, to}, /*align_corners=*/false)
                            : at::upsample_nearest2d(image, {to, to});
  return to_rows(up);
}

ScheduleLoss ContinuousNextScaleSchedule::loss(const ScheduleModels& models,
                                               const TrainingBatch& batch,
                                               at::Generator& generator) {
  batch.tokens.validate();
  TESSERA_CHECK(!batch.tokens.discrete(), "{}: training needs continuous tokens", kWho);
  check_models(models, batch.tokens.grids);
  Backbone& backbone = models.backbone;
  const at::Tensor latent = batch.tokens.scales[0].to(backbone.device(), at::kFloat);
  const int64_t B = latent.size(0), C = latent.size(2), W = backbone.width();
  TESSERA_CHECK(C == models.head.token_channels(), "{}: tokens have {} channels, the head {}",
                kWho, C, models.head.token_channels());
  const std::vector<at::Tensor> targets = scales(latent);
  const auto S = static_cast<int64_t>(targets.size());
  std::vector<at::Tensor> inputs;
  for (int64_t s = 1; s < S; ++s) inputs.push_back(scale_input(targets[s - 1], s));
  const TokenLayout pyramid = layout();
  BackboneForwardOptions fo;
  fo.generator = generator;  // condition dropout
  const BackboneOutput out =
      backbone.forward(inputs.empty() ? at::Tensor() : at::cat(inputs, 1),
                       training_labels(backbone, batch, B, kWho), training_mask({}), fo);

  // Row weights: scale s's total weight w_s spread over its n_s rows (the head's loss is
  // Σ w·ℓ / Σ w, and Σ w = 1).
  const std::vector<double> scale_weights =
      scale_loss_weights(config_.loss_weighting, config_.patch_nums);
  std::vector<at::Tensor> row_weights;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = pyramid.segment_length(s);
    row_weights.push_back(
        at::full({B, n}, scale_weights[s] / static_cast<double>(n), latent.options()));
  }
  const int64_t L = pyramid.length();
  HeadLossOptions head_options;
  head_options.weights = at::cat(row_weights, 1).reshape({B * L});
  head_options.generator = generator;
  HeadLoss head_loss = models.head.loss(out.hidden.reshape({B * L, W}),
                                        at::cat(targets, 1).reshape({B * L, C}), head_options);
  ScheduleLoss result;
  result.loss = head_loss.loss;
  result.terms = head_loss.terms;
  result.predicted_tokens = B * L;
  return result;
}

Tokens ContinuousNextScaleSchedule::sample_impl(const ScheduleModels& models,
                                                const at::Tensor& labels,
                                                const std::vector<TokenGridSize>& grids,
                                                const GenerationOptions& options,
                                                const CheckedHeadOptions& head, SampleRngs& rngs) {
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);  // no condition dropout while sampling
  const ContinuousNextScaleSamplingOptions& sampling = sampling_options(options);
  Backbone& backbone = models.backbone;
  const TokenLayout pyramid = layout();
  const SamplingLabels sl = sampling_labels(backbone, labels, options.guidance, rngs, kWho);
  const int64_t B = sl.batch, S = pyramid.num_segments(), W = backbone.width();
  const int64_t C = models.head.token_channels();
  const bool doubled = options.guidance.doubles_batch();
  const int64_t run_batch = doubled ? 2 * B : B;
  const BlockMask full = training_mask(grids);

  std::optional<KVCache> cache;
  if (sampling.use_kv_cache) cache.emplace(backbone.make_kv_cache(run_batch, pyramid.length()));
  std::vector<at::Tensor> prefix_inputs;  // without a cache: every scale's inputs so far
  at::Tensor previous;                    // the last drawn scale [B, n, C]
  for (int64_t s = 0; s < S; ++s) {
    const int64_t begin = pyramid.segment_begin(s), end = pyramid.segment_end(s), n = end - begin;
    at::Tensor inputs;
    if (s > 0) {
      inputs = scale_input(previous, s);
      if (doubled) inputs = repeat_for_guidance(inputs);
    }
    at::Tensor hidden;
    if (cache) {
      BackboneForwardOptions fo;
      fo.cache = &*cache;
      hidden = backbone.forward(inputs, sl.run_labels, full.rows(begin, end), fo).hidden;
    } else {
      if (inputs.defined()) prefix_inputs.push_back(inputs);
      const at::Tensor all = prefix_inputs.empty() ? at::Tensor() : at::cat(prefix_inputs, 1);
      hidden = backbone.forward(all, sl.run_labels, full.rows(0, end)).hidden.slice(1, begin, end);
    }
    HeadStep step;
    step.progress.step = s;
    step.progress.num_steps = S;
    step.progress.scale = s;
    step.progress.num_scales = S;
    const HeadSample drawn =
        head.draw(models.head, hidden.reshape({run_batch * n, W}), rngs, step);
    previous = drawn.values.to(backbone.device(), at::kFloat).reshape({B, n, C});
  }
  return Tokens{{previous}, {grids[0]}};
}

}  // namespace tessera
