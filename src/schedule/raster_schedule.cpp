#include "tessera/schedule/raster_schedule.h"

#include <ATen/ATen.h>

#include <optional>

#include "schedule/schedule_util.h"

namespace tessera {

using namespace schedule_detail;

namespace {

// Backbone segments {1, L − 1} ({1} for a single token).
TokenLayout raster_layout(int64_t tokens) {
  return tokens > 1 ? TokenLayout({1, tokens - 1}) : TokenLayout({1});
}

}  // namespace

RasterSchedule::RasterSchedule(RasterScheduleConfig config) : config_(config) {
  config_.validate();
}

void RasterSchedule::check_models(const ScheduleModels& models,
                                  const std::vector<TokenGridSize>& grids) const {
  const TokenGridSize grid = single_grid(grids, "raster schedule");
  check_no_decoder(models, "raster schedule");
  check_no_hmar_tail(models, "raster schedule");
  const int64_t L = grid.count();
  const BackboneConfig& c = models.backbone.config();
  TESSERA_CHECK(c.input == InputKind::token_ids,
                "raster schedule: the backbone must take token ids (input token_ids), got vectors");
  TESSERA_CHECK(c.num_classes > 0 && c.condition_tokens == 1,
                "raster schedule: the backbone needs a class-token prefix (num_classes > 0 and "
                "condition_tokens 1), got num_classes {} and condition_tokens {}",
                c.num_classes, c.condition_tokens);
  TESSERA_CHECK(models.backbone.layout() == raster_layout(L),
                "raster schedule: for a {}x{} grid the backbone's segments must be {} (the class "
                "token, then tokens 0..L−2), got {}",
                grid.height, grid.width, raster_layout(L).to_string(),
                models.backbone.layout().to_string());
  TESSERA_CHECK(models.head.kind() == HeadKind::discrete,
                "raster schedule: needs a discrete head (token ids), got a continuous one");
  TESSERA_CHECK(models.head.hidden_width() == c.width,
                "raster schedule: the head expects hidden width {}, the backbone has {}",
                models.head.hidden_width(), c.width);
  TESSERA_CHECK(c.vocab_size >= models.head.vocab_size(),
                "raster schedule: the backbone's vocab_size {} is smaller than the head's {}",
                c.vocab_size, models.head.vocab_size());
  check_tokenizer_tokens(models, /*ids=*/true, "raster schedule");
  if (config_.order != GenerationOrder::raster) {
    // See Note [Positions of a generation order].
    TESSERA_CHECK(c.rope != RopeKind::rope_2d,
                  "raster schedule: order '{}' cannot use 2D RoPE (it would place sequence index "
                  "i at raster cell i − 1); use learned absolute positions",
                  generation_order_name(config_.order));
    TESSERA_CHECK(c.absolute_positions == AbsolutePositions::learned,
                  "raster schedule: order '{}' needs learned absolute positions (they carry which "
                  "cell each row predicts), see Note [Positions of a generation order]",
                  generation_order_name(config_.order));
  }
}

BlockMask RasterSchedule::training_mask(const std::vector<TokenGridSize>& grids) const {
  return BlockMask::causal(raster_layout(single_grid(grids, "raster schedule").count()));
}

int64_t RasterSchedule::num_steps_impl(const std::vector<TokenGridSize>& grids,
                                       const GenerationOptions&) const {
  return single_grid(grids, "raster schedule").count();
}

const RasterSamplingOptions& RasterSchedule::sampling_options(
    const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, "raster");
}

void RasterSchedule::check_sampling(const std::vector<TokenGridSize>&,
                                    const GenerationOptions& options) const {
  sampling_options(options).validate();
}

ScheduleLoss RasterSchedule::loss(const ScheduleModels& models, const TrainingBatch& batch,
                                  at::Generator& generator) {
  batch.tokens.validate();
  TESSERA_CHECK(batch.tokens.discrete(), "raster schedule: training needs token ids");
  check_models(models, batch.tokens.grids);
  const TokenGridSize grid = batch.tokens.grids[0];
  const int64_t L = grid.count();
  Backbone& backbone = models.backbone;
  const at::Tensor ids = batch.tokens.scales[0].to(backbone.device(), at::kLong);
  const int64_t B = ids.size(0);
  const at::Tensor order =
      generation_order_tensor(config_.order, grid.height, grid.width).to(backbone.device());
  const at::Tensor sequence = ids.index_select(1, order);  // [B, L] in generation order
  const at::Tensor labels = training_labels(backbone, batch, B, "raster schedule");

  BackboneForwardOptions forward_options;
  forward_options.generator = generator;
  // Rows after the class token hold tokens order[0..L−2] (Note [Backbone rows and inputs]).
  BackboneOutput out = backbone.forward(sequence.slice(1, 0, L - 1), labels,
                                        training_mask(batch.tokens.grids), forward_options);
  HeadLossOptions head_options;
  head_options.condition = head_condition(models.head, out.condition, L);
  head_options.generator = generator;
  HeadLoss head_loss = models.head.loss(out.hidden.reshape({B * L, backbone.width()}),
                                        sequence.reshape({B * L}), head_options);
  ScheduleLoss result;
  result.loss = head_loss.loss;
  result.terms = head_loss.terms;
  result.predicted_tokens = B * L;
  return result;
}

Tokens RasterSchedule::sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                                   const std::vector<TokenGridSize>& grids,
                                   const GenerationOptions& options,
                                   const CheckedHeadOptions& head, SampleRngs& rngs) {
  const RasterSamplingOptions& sampling = sampling_options(options);
  const int64_t B = sample_batch_size(models.backbone, labels, rngs, options, "raster schedule");
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);
  Backbone& backbone = models.backbone;
  const TokenGridSize grid = grids[0];
  const int64_t L = grid.count();
  const at::Device device = backbone.device();
  const at::Tensor run_labels = backbone_labels(backbone, labels, options);
  const int64_t rows = run_labels.size(0);
  const BlockMask full = training_mask(grids);

  at::Tensor sequence = at::zeros({B, L}, at::TensorOptions().dtype(at::kLong).device(device));
  std::optional<KVCache> cache;
  if (sampling.kv_cache) cache.emplace(backbone.make_kv_cache(rows, L));
  for (int64_t s = 0; s < L; ++s) {
    BackboneOutput out;
    at::Tensor hidden;
    if (cache) {
      // Step 0 prefills the class token; step s feeds the token drawn at step s − 1.
      const at::Tensor inputs =
          s == 0 ? at::Tensor() : maybe_double(sequence.slice(1, s - 1, s), options);
      BackboneForwardOptions forward_options;
      forward_options.cache = &*cache;
      out = backbone.forward(inputs, run_labels, full.rows(s, s + 1), forward_options);
      hidden = out.hidden.select(1, 0);
    } else {
      const at::Tensor inputs =
          s == 0 ? at::Tensor() : maybe_double(sequence.slice(1, 0, s), options);
      out = backbone.forward(inputs, run_labels, full.rows(0, s + 1));
      hidden = out.hidden.select(1, s);
    }
    HeadStep step;
    step.progress.step = s;
    step.progress.num_steps = L;
    step.condition = head_condition(models.head, out.condition, 1);
    // hidden [rows, width]: one row per sample, conditional half first (Note [Guidance batch
    // layout]).
    HeadSample drawn = head.draw(models.head, hidden, rngs, step);
    sequence.select(1, s).copy_(drawn.values.to(device, at::kLong));
  }
  // tokens[:, order[i]] = sequence[:, i]
  const at::Tensor order =
      generation_order_tensor(config_.order, grid.height, grid.width).to(device);
  at::Tensor tokens = at::empty_like(sequence).index_copy_(1, order, sequence);
  return Tokens{{tokens}, {grid}};
}

}  // namespace tessera
