#include "tessera/schedule/mar_schedule.h"

#include <ATen/ATen.h>

#include <cmath>

#include "schedule/mar_decoding.h"
#include "schedule/schedule_util.h"

namespace tessera {

using namespace schedule_detail;

void MarMaskRatio::validate() const {
  TESSERA_CHECK(min >= 0 && min <= max && max <= 1,
                "mask ratio: need 0 <= min <= max <= 1, got min {} and max {}", min, max);
  TESSERA_CHECK(std > 0, "mask ratio: std must be > 0, got {}", std);
  // Rejection sampling must accept often enough: the interval may not lie far in a tail.
  TESSERA_CHECK(std::abs(std::clamp(mean, min, max) - mean) <= 4 * std,
                "mask ratio: [{}, {}] lies more than 4 std from the mean {}", min, max, mean);
}

double MarMaskRatio::draw(at::Generator& generator) const {
  for (int attempt = 0; attempt < 100000; ++attempt) {
    const double x =
        mean + std * at::empty({1}, at::kDouble).normal_(0.0, 1.0, generator).item<double>();
    if (x >= min && x <= max) return x;
  }
  TESSERA_FAIL("mask ratio: no draw in [{}, {}] after 100000 attempts", min, max);
}

void MarScheduleConfig::validate() const {
  TESSERA_CHECK(buffer_size >= 0, "mar schedule: buffer_size must be >= 0, got {}", buffer_size);
  mask_ratio.validate();
  sampling.validate();
}

MarSchedule::MarSchedule(MarScheduleConfig config) : config_(config) { config_.validate(); }

TokenLayout MarSchedule::layout(int64_t tokens) const {
  return config_.buffer_size > 0 ? TokenLayout({config_.buffer_size, tokens})
                                 : TokenLayout({tokens});
}

void MarSchedule::check_models(const ScheduleModels& models,
                               const std::vector<TokenGridSize>& grids) const {
  check_no_hmar_tail(models, "mar schedule");
  const int64_t L = single_grid(grids, "mar schedule").count();
  check_tokenizer_tokens(models, /*ids=*/false, "mar schedule");
  if (config_.encoder_decoder) {
    check_mar_encoder_decoder(models, config_.buffer_size, layout(L), "mar schedule");
    return;
  }
  TESSERA_CHECK(models.decoder == nullptr,
                "mar schedule: a decoder backbone was given but encoder_decoder is off");
  check_mar_models(models, config_.buffer_size, "mar schedule");
  TESSERA_CHECK(models.backbone.layout() == layout(L),
                "mar schedule: for {} tokens the backbone's segments must be {}, got {}", L,
                layout(L).to_string(), models.backbone.layout().to_string());
}

BlockMask MarSchedule::training_mask(const std::vector<TokenGridSize>& grids) const {
  return BlockMask::bidirectional(layout(single_grid(grids, "mar schedule").count()));
}

int64_t MarSchedule::num_steps_impl(const std::vector<TokenGridSize>&,
                                    const GenerationOptions& options) const {
  return sampling_options(options).steps;
}

const MarSamplingOptions& MarSchedule::sampling_options(const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, "mar");
}

void MarSchedule::check_sampling(const std::vector<TokenGridSize>& grids,
                                 const GenerationOptions& options) const {
  const MarSamplingOptions& sampling = sampling_options(options);
  sampling.validate();
  const int64_t L = single_grid(grids, "mar schedule").count();
  TESSERA_CHECK(sampling.steps <= L,
                "mar schedule: {} steps for {} tokens; each step must predict at least one, so "
                "steps must be <= {}",
                sampling.steps, L, L);
}

ScheduleLoss MarSchedule::loss(const ScheduleModels& models, const TrainingBatch& batch,
                               at::Generator& generator) {
  batch.tokens.validate();
  TESSERA_CHECK(!batch.tokens.discrete(), "mar schedule: training needs continuous tokens");
  check_models(models, batch.tokens.grids);
  Backbone& backbone = models.backbone;
  const at::Device device = backbone.device();
  const at::Tensor x = batch.tokens.scales[0].to(device, at::kFloat);
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), W = models.head.hidden_width();
  TESSERA_CHECK(C == models.head.token_channels(),
                "mar schedule: tokens have {} channels, the head {}", C,
                models.head.token_channels());
  const at::Tensor labels = training_labels(backbone, batch, B, "mar schedule");
  const double ratio = config_.mask_ratio.draw(generator);
  const at::Tensor mask = mar_training_mask(B, L, ratio, generator).to(device);
  BackboneForwardOptions forward_options;
  forward_options.generator = generator;
  const BlockMask full = training_mask(batch.tokens.grids);
  const at::Tensor hidden = mar_token_hidden(
      models, x, mask, labels, MarCall{&full, config_.buffer_size, at::Tensor()}, forward_options);
  HeadLossOptions head_options;
  head_options.weights = mask.reshape({B * L}).to(at::kFloat);
  head_options.generator = generator;
  HeadLoss head_loss =
      models.head.loss(hidden.reshape({B * L, W}), x.reshape({B * L, C}), head_options);
  ScheduleLoss result;
  result.loss = head_loss.loss;
  result.terms = head_loss.terms;
  result.predicted_tokens = mask.sum().item<int64_t>();
  result.terms.emplace_back("mask_ratio", ratio);
  return result;
}

MarEncoderDecoderOutputs MarSchedule::forward(const ScheduleModels& models,
                                              const at::Tensor& tokens, const at::Tensor& mask,
                                              const at::Tensor& labels) const {
  const int64_t C = models.head.token_channels();
  TESSERA_CHECK(tokens.defined() && tokens.dim() == 3 && tokens.size(2) == C,
                "mar schedule forward: tokens must be [B, L, {}], got {}", C,
                tokens.defined() ? tokens.sizes() : at::IntArrayRef{});
  const int64_t B = tokens.size(0), L = tokens.size(1);
  TESSERA_CHECK(mask.defined() && mask.scalar_type() == at::kBool && mask.dim() == 2 &&
                    mask.size(0) == B && mask.size(1) == L,
                "mar schedule forward: mask must be bool [{}, {}], got {}", B, L,
                mask.defined() ? mask.sizes() : at::IntArrayRef{});
  const std::vector<TokenGridSize> grids = {TokenGridSize{1, L}};
  check_models(models, grids);
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);
  const at::Device device = models.backbone.device();
  const BlockMask full = training_mask(grids);
  const MarCall call{&full, config_.buffer_size, at::Tensor()};
  const at::Tensor x = tokens.to(device, at::kFloat);
  const at::Tensor m = mask.to(device);
  const at::Tensor l = labels.defined() ? labels.to(device) : labels;
  if (models.decoder != nullptr) return encoder_decoder_forward(models, x, m, l, call);
  return {at::Tensor(), mar_token_hidden(models, x, m, l, call)};
}

Tokens MarSchedule::sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                                const std::vector<TokenGridSize>& grids,
                                const GenerationOptions& options, const CheckedHeadOptions& head,
                                SampleRngs& rngs) {
  const MarSamplingOptions& sampling = sampling_options(options);
  sample_batch_size(models.backbone, labels, rngs, options, "mar schedule");
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);
  const TokenGridSize grid = grids[0];
  const BlockMask full = training_mask(grids);
  MarPhase phase;
  phase.tokens = grid.count();
  phase.channels = models.head.token_channels();
  phase.steps = sampling.steps;
  phase.curve = sampling.curve;
  phase.total_steps = sampling.steps;
  phase.mask = &full;
  phase.first_row = config_.buffer_size;
  at::Tensor tokens =
      mar_decode(models, backbone_labels(models.backbone, labels, options), options, head,
                 rngs, phase);
  return Tokens{{tokens}, {grid}};
}

}  // namespace tessera
