#include "tessera/schedule/next_scale_schedule.h"

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
constexpr const char* kWho = "next_scale";
}

NextScaleSchedule::NextScaleSchedule(NextScaleScheduleConfig config) : config_(config) {
  config_.validate();
}

void NextScaleSchedule::check_models(const ScheduleModels& models,
                                     const std::vector<TokenGridSize>& grids) const {
  check_next_scale_models(models, grids, kWho, {0});
  check_no_hmar_tail(models, kWho);
}

BlockMask NextScaleSchedule::training_mask(const std::vector<TokenGridSize>& grids) const {
  return BlockMask::block_causal(pyramid_layout(grids, kWho));
}

int64_t NextScaleSchedule::num_steps_impl(const std::vector<TokenGridSize>& grids,
                                          const GenerationOptions&) const {
  return static_cast<int64_t>(pyramid_sides(grids, kWho).size());
}

const NextScaleSamplingOptions& NextScaleSchedule::sampling_options(
    const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, kWho);
}

void NextScaleSchedule::check_sampling(const std::vector<TokenGridSize>&,
                                       const GenerationOptions& options) const {
  sampling_options(options).validate();
}

ScheduleLoss NextScaleSchedule::loss(const ScheduleModels& models, const TrainingBatch& batch,
                                     at::Generator& generator) {
  const std::vector<at::Tensor> ids = batch_ids(batch, kWho);
  check_models(models, batch.tokens.grids);
  const TokenLayout layout = pyramid_layout(batch.tokens.grids, kWho);
  const at::Tensor inputs = teacher_forcing_inputs(models, batch, ids, layout, kWho);

  BackboneForwardOptions fo;
  fo.generator = generator;  // condition dropout
  const BackboneOutput out = models.backbone.forward(
      inputs.to(models.backbone.device(), at::kFloat), batch.labels,
      BlockMask::block_causal(layout), fo);
  return pyramid_cross_entropy(models.head, out.hidden, out.condition, ids, layout,
                               scale_loss_weights(config_.loss_weighting,
                                                  pyramid_sides(batch.tokens.grids, kWho)));
}

Tokens NextScaleSchedule::sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                                      const std::vector<TokenGridSize>& grids,
                                      const GenerationOptions& options,
                                      const CheckedHeadOptions& head, SampleRngs& rngs) {
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);  // no condition dropout while sampling
  const NextScaleSamplingOptions& sampling = sampling_options(options);
  MultiScaleTokenizer& tokenizer = multiscale_tokenizer(models, kWho);
  Backbone& backbone = models.backbone;
  const TokenLayout layout = pyramid_layout(grids, kWho);
  const SamplingLabels sl = sampling_labels(backbone, labels, options.guidance, rngs, kWho);
  const int64_t B = sl.batch, S = layout.num_segments(), W = backbone.width();
  const bool doubled = options.guidance.doubles_batch();
  const int64_t run_batch = doubled ? 2 * B : B;
  const BlockMask full = BlockMask::block_causal(layout);

  std::optional<KVCache> cache;
  if (sampling.use_kv_cache) cache.emplace(backbone.make_kv_cache(run_batch, layout.length()));
  std::vector<at::Tensor> prefix_inputs;  // without a cache: every scale's inputs so far

  at::Tensor f_hat = tokenizer.empty_f_hat(B);
  Tokens result;
  result.grids = grids;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t begin = layout.segment_begin(s), end = layout.segment_end(s), n = end - begin;
    // Scale 0 is the condition rows (sos); scale s >= 1 reads area_down(f_hat, pn_s).
    at::Tensor inputs;
    if (s > 0) {
      inputs = tokenizer.next_scale_input(f_hat, s).to(backbone.device(), at::kFloat);
      if (doubled) inputs = repeat_for_guidance(inputs);
    }
    at::Tensor hidden, condition;
    if (cache) {
      BackboneForwardOptions fo;
      fo.cache = &*cache;
      const BackboneOutput out = backbone.forward(inputs, sl.run_labels, full.rows(begin, end), fo);
      hidden = out.hidden;
      condition = out.condition;
    } else {
      if (inputs.defined()) prefix_inputs.push_back(inputs);
      const at::Tensor all = prefix_inputs.empty() ? at::Tensor() : at::cat(prefix_inputs, 1);
      const BackboneOutput out = backbone.forward(all, sl.run_labels, full.rows(0, end));
      hidden = out.hidden.slice(1, begin, end);
      condition = out.condition;
    }
    HeadStep step;
    step.progress.step = s;
    step.progress.num_steps = S;
    step.progress.scale = s;
    step.progress.num_scales = S;
    step.condition = head_condition_rows(models.head, condition, n);
    const HeadSample drawn =
        head.draw(models.head, hidden.reshape({run_batch * n, W}), rngs, step);
    const at::Tensor ids = drawn.values.reshape({B, n}).to(at::kLong);
    tokenizer.add_scale_ids(f_hat, s, ids);
    result.scales.push_back(ids);
    if (observer_) {
      ScaleStepRecord rec;
      rec.step = s;
      rec.scale = s;
      rec.ids = ids.cpu();
      rec.probabilities = drawn.probabilities.defined()
                              ? drawn.probabilities.reshape({B, n}).to(at::kCPU, at::kFloat)
                              : at::Tensor();
      rec.committed = at::ones({B, n}, at::kBool);
      rec.masked = at::zeros({B, n}, at::kBool);
      observer_(rec);
    }
  }
  return result;
}

}  // namespace tessera
