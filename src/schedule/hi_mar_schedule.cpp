#include "tessera/schedule/hi_mar_schedule.h"

#include <ATen/ATen.h>

#include "schedule/mar_decoding.h"
#include "schedule/schedule_util.h"

namespace tessera {

using namespace schedule_detail;

void HiMarScheduleConfig::validate() const {
  TESSERA_CHECK(buffer_size >= 0, "hi_mar schedule: buffer_size must be >= 0, got {}", buffer_size);
  TESSERA_CHECK(pivot_factor >= 2, "hi_mar schedule: pivot_factor must be >= 2, got {}",
                pivot_factor);
  TESSERA_CHECK(pivot_loss_weight >= 0, "hi_mar schedule: pivot_loss_weight must be >= 0, got {}",
                pivot_loss_weight);
  mask_ratio.validate();
  sampling.validate();
}

HiMarSchedule::HiMarSchedule(HiMarScheduleConfig config) : config_(config) { config_.validate(); }

TokenGridSize HiMarSchedule::pivot_grid(const TokenGridSize& dense) const {
  const int64_t f = config_.pivot_factor;
  TESSERA_CHECK(dense.height % f == 0 && dense.width % f == 0,
                "hi_mar schedule: pivot_factor {} must divide the {}x{} token grid", f,
                dense.height, dense.width);
  return {dense.height / f, dense.width / f};
}

at::Tensor HiMarSchedule::pivots(const at::Tensor& dense, const TokenGridSize& grid) const {
  const TokenGridSize p = pivot_grid(grid);
  TESSERA_CHECK(dense.dim() == 3 && dense.size(1) == grid.count(),
                "hi_mar schedule: expected dense tokens [B, {}, C], got {}", grid.count(),
                dense.sizes());
  const int64_t B = dense.size(0), C = dense.size(2), f = config_.pivot_factor;
  // [B, h, w, C] → [B, h/f, f, w/f, f, C] → mean over the two f axes.
  return dense.reshape({B, p.height, f, p.width, f, C}).mean({2, 4}).reshape({B, p.count(), C});
}

TokenLayout HiMarSchedule::layout(const TokenGridSize& dense) const {
  const int64_t P = pivot_grid(dense).count(), L = dense.count();
  return config_.buffer_size > 0 ? TokenLayout({config_.buffer_size, P, L}) : TokenLayout({P, L});
}

void HiMarSchedule::check_models(const ScheduleModels& models,
                                 const std::vector<TokenGridSize>& grids) const {
  const TokenGridSize grid = single_grid(grids, "hi_mar schedule");
  check_no_decoder(models, "hi_mar schedule");
  check_no_hmar_tail(models, "hi_mar schedule");
  check_mar_models(models, config_.buffer_size, "hi_mar schedule");
  TESSERA_CHECK(models.backbone.layout() == layout(grid),
                "hi_mar schedule: for a {}x{} grid (pivots {}x{}) the backbone's segments must be "
                "{} (buffer, pivots, dense), got {}",
                grid.height, grid.width, pivot_grid(grid).height, pivot_grid(grid).width,
                layout(grid).to_string(), models.backbone.layout().to_string());
}

BlockMask HiMarSchedule::training_mask(const std::vector<TokenGridSize>& grids) const {
  return BlockMask::block_causal(layout(single_grid(grids, "hi_mar schedule")));
}

const HiMarSamplingOptions& HiMarSchedule::sampling_options(
    const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, "hi_mar");
}

void HiMarSchedule::check_sampling(const std::vector<TokenGridSize>&,
                                   const GenerationOptions& options) const {
  sampling_options(options).validate();
}

int64_t HiMarSchedule::num_steps_impl(const std::vector<TokenGridSize>&,
                                      const GenerationOptions& options) const {
  const HiMarSamplingOptions& sampling = sampling_options(options);
  return sampling.pivot_steps + sampling.dense_steps;
}

ScheduleLoss HiMarSchedule::loss(const ScheduleModels& models, const TrainingBatch& batch,
                                 at::Generator& generator) {
  batch.tokens.validate();
  TESSERA_CHECK(!batch.tokens.discrete(), "hi_mar schedule: training needs continuous tokens");
  check_models(models, batch.tokens.grids);
  Backbone& backbone = models.backbone;
  const at::Device device = backbone.device();
  const TokenGridSize grid = batch.tokens.grids[0];
  const at::Tensor x = batch.tokens.scales[0].to(device, at::kFloat);
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), W = backbone.width();
  TESSERA_CHECK(C == models.head.token_channels(),
                "hi_mar schedule: tokens have {} channels, the head {}", C,
                models.head.token_channels());
  const at::Tensor pivot = pivots(x, grid);
  const int64_t P = pivot.size(1), c = config_.buffer_size;
  const at::Tensor labels = training_labels(backbone, batch, B, "hi_mar schedule");
  const BlockMask full = training_mask(batch.tokens.grids);
  BackboneForwardOptions forward_options;
  forward_options.generator = generator;
  HeadLossOptions head_options;
  head_options.generator = generator;

  // Phase 1: masked pivots, on the buffer and pivot rows only.
  const double pivot_ratio = config_.mask_ratio.draw(generator);
  const at::Tensor pivot_mask = mar_training_mask(B, P, pivot_ratio, generator).to(device);
  BackboneOutput pivot_out =
      backbone.forward(mar_inputs(pivot, pivot_mask), labels, full.rows(0, c + P), forward_options);
  head_options.weights = pivot_mask.reshape({B * P}).to(at::kFloat);
  HeadLoss pivot_loss = models.head.loss(pivot_out.hidden.slice(1, c, c + P).reshape({B * P, W}),
                                         pivot.reshape({B * P, C}), head_options);

  // Phase 2: every pivot known, masked dense tokens.
  const double dense_ratio = config_.mask_ratio.draw(generator);
  const at::Tensor dense_mask = mar_training_mask(B, L, dense_ratio, generator).to(device);
  const at::Tensor inputs =
      at::cat({mar_inputs(pivot, at::zeros_like(pivot_mask)), mar_inputs(x, dense_mask)}, 1);
  BackboneOutput dense_out = backbone.forward(inputs, labels, full, forward_options);
  head_options.weights = dense_mask.reshape({B * L}).to(at::kFloat);
  HeadLoss dense_loss =
      models.head.loss(dense_out.hidden.slice(1, c + P, c + P + L).reshape({B * L, W}),
                       x.reshape({B * L, C}), head_options);

  ScheduleLoss result;
  result.loss = config_.pivot_loss_weight * pivot_loss.loss + dense_loss.loss;
  for (const auto& [name, value] : pivot_loss.terms)
    result.terms.emplace_back("pivot_" + name, value);
  for (const auto& [name, value] : dense_loss.terms)
    result.terms.emplace_back("dense_" + name, value);
  result.terms.emplace_back("pivot_mask_ratio", pivot_ratio);
  result.terms.emplace_back("dense_mask_ratio", dense_ratio);
  result.predicted_tokens = pivot_mask.sum().item<int64_t>() + dense_mask.sum().item<int64_t>();
  return result;
}

Tokens HiMarSchedule::sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                                  const std::vector<TokenGridSize>& grids,
                                  const GenerationOptions& options,
                                  const CheckedHeadOptions& head, SampleRngs& rngs) {
  const HiMarSamplingOptions& sampling = sampling_options(options);
  sample_batch_size(models.backbone, labels, rngs, options, "hi_mar schedule");
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);
  const TokenGridSize grid = grids[0];
  const int64_t P = pivot_grid(grid).count(), c = config_.buffer_size;
  const BlockMask full = training_mask(grids);
  const BlockMask pivot_rows = full.rows(0, c + P);
  const at::Tensor run_labels = backbone_labels(models.backbone, labels, options);
  const int64_t total = sampling.pivot_steps + sampling.dense_steps;

  MarPhase phase1;
  phase1.tokens = P;
  phase1.channels = models.head.token_channels();
  phase1.steps = sampling.pivot_steps;
  phase1.curve = sampling.curve;
  phase1.step_offset = 0;
  phase1.total_steps = total;
  phase1.mask = &pivot_rows;
  phase1.first_row = c;
  const at::Tensor pivot = mar_decode(models, run_labels, options, head, rngs, phase1);

  MarPhase phase2 = phase1;
  phase2.tokens = grid.count();
  phase2.steps = sampling.dense_steps;
  phase2.step_offset = sampling.pivot_steps;
  phase2.mask = &full;
  phase2.first_row = c + P;
  phase2.prefix =
      mar_inputs(pivot, at::zeros({pivot.size(0), P}, pivot.options().dtype(at::kBool)));
  const at::Tensor dense = mar_decode(models, run_labels, options, head, rngs, phase2);
  return Tokens{{dense}, {grid}};
}

}  // namespace tessera
