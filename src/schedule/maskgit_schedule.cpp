#include "tessera/schedule/maskgit_schedule.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "schedule/schedule_util.h"

namespace tessera {

using namespace schedule_detail;

void MaskGitScheduleConfig::validate() const {
  TESSERA_CHECK(condition_tokens >= 0, "maskgit schedule: condition_tokens must be >= 0, got {}",
                condition_tokens);
  TESSERA_CHECK(span_length >= 1, "maskgit schedule: span_length must be >= 1, got {}",
                span_length);
  sampling.validate();
}

MaskGitSchedule::MaskGitSchedule(MaskGitScheduleConfig config) : config_(config) {
  config_.validate();
}

TokenLayout MaskGitSchedule::layout(int64_t tokens) const {
  return config_.condition_tokens > 0 ? TokenLayout({config_.condition_tokens, tokens})
                                      : TokenLayout({tokens});
}

void MaskGitSchedule::check_models(const ScheduleModels& models,
                                   const std::vector<TokenGridSize>& grids) const {
  const int64_t L = single_grid(grids, "maskgit schedule").count();
  check_no_decoder(models, "maskgit schedule");
  check_no_hmar_tail(models, "maskgit schedule");
  const BackboneConfig& c = models.backbone.config();
  TESSERA_CHECK(
      c.input == InputKind::token_ids,
      "maskgit schedule: the backbone must take token ids (input token_ids), got vectors");
  TESSERA_CHECK(models.head.kind() == HeadKind::discrete,
                "maskgit schedule: needs a discrete head (token ids), got a continuous one");
  TESSERA_CHECK(models.head.hidden_width() == c.width,
                "maskgit schedule: the head expects hidden width {}, the backbone has {}",
                models.head.hidden_width(), c.width);
  const int64_t V = models.head.vocab_size();
  TESSERA_CHECK(c.vocab_size == V + 1,
                "maskgit schedule: the backbone's vocab_size must be the head's {} plus one mask "
                "id ({}), got {}",
                V, V + 1, c.vocab_size);
  TESSERA_CHECK(c.condition_tokens == config_.condition_tokens,
                "maskgit schedule: configured for {} condition tokens, the backbone has {}",
                config_.condition_tokens, c.condition_tokens);
  TESSERA_CHECK(models.backbone.layout() == layout(L),
                "maskgit schedule: for {} tokens the backbone's segments must be {}, got {}", L,
                layout(L).to_string(), models.backbone.layout().to_string());
  TESSERA_CHECK(L % config_.span_length == 0,
                "maskgit schedule: span_length {} must divide the {} tokens of the grid",
                config_.span_length, L);
  check_tokenizer_tokens(models, /*ids=*/true, "maskgit schedule");
}

const MaskGitSamplingOptions& MaskGitSchedule::sampling_options(
    const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, "maskgit");
}

void MaskGitSchedule::check_sampling(const std::vector<TokenGridSize>& grids,
                                     const GenerationOptions& options) const {
  const MaskGitSamplingOptions& sampling = sampling_options(options);
  sampling.validate();
  const int64_t units = single_grid(grids, "maskgit schedule").count() / config_.span_length;
  TESSERA_CHECK(sampling.steps <= units,
                "maskgit schedule: {} steps for {} units (tokens / span_length); each step must "
                "commit at least one, so steps must be <= {}",
                sampling.steps, units, units);
}

BlockMask MaskGitSchedule::training_mask(const std::vector<TokenGridSize>& grids) const {
  return BlockMask::bidirectional(layout(single_grid(grids, "maskgit schedule").count()));
}

int64_t MaskGitSchedule::num_steps_impl(const std::vector<TokenGridSize>&,
                                        const GenerationOptions& options) const {
  return sampling_options(options).steps;
}

std::vector<int64_t> overlapping_span_starts_table(int64_t tokens, int64_t span_length) {
  TESSERA_CHECK(tokens >= 1 && span_length >= 1 && span_length <= tokens,
                "overlapping spans: span_length {} must be in [1, {}] (the tokens)", span_length,
                tokens);
  // mean_rate[u] = 1 − C(L − k, u) / C(L, u), the ratio of binomials as the running product
  // Π_{j<u} (L − k − j) / (L − j), which stays in [0, 1] and cannot overflow.
  const auto L = static_cast<double>(tokens), k = static_cast<double>(span_length);
  std::vector<double> mean_rate{0.0};
  double unmasked = (L - k) / L;
  for (int64_t u = 1; u < tokens; ++u) {
    mean_rate.push_back(1.0 - unmasked);
    unmasked *= std::max(0.0, (L - k - static_cast<double>(u)) / (L - static_cast<double>(u)));
  }
  std::vector<int64_t> table;
  for (int percent = 0; percent <= 100; ++percent) {
    const double rate = percent / 100.0;
    table.push_back(std::lower_bound(mean_rate.begin(), mean_rate.end(), rate) -
                    mean_rate.begin());
  }
  return table;
}

at::Tensor MaskGitSchedule::draw_training_mask(int64_t batch, int64_t tokens,
                                               at::Generator& generator) const {
  const int64_t k = config_.span_length;
  TESSERA_CHECK(tokens >= 1 && tokens % k == 0,
                "maskgit schedule: span_length {} must divide the {} tokens", k, tokens);
  const at::Tensor r = at::empty({batch}, at::kDouble).uniform_(0.0, 1.0, generator);
  if (k > 1 && config_.span_training == SpanTraining::overlapping) {
    const std::vector<int64_t> table = overlapping_span_starts_table(tokens, k);
    const at::Tensor scores = at::empty({batch, tokens}, at::kFloat).uniform_(0.0, 1.0, generator);
    std::vector<int64_t> starts(static_cast<size_t>(batch));
    const auto* rp = r.data_ptr<double>();
    for (int64_t b = 0; b < batch; ++b) {
      const double ratio = masked_fraction(config_.training_curve, rp[b]);
      const auto percent = static_cast<size_t>(std::lround(100.0 * ratio));
      starts[static_cast<size_t>(b)] = std::max<int64_t>(1, table.at(percent));
    }
    const at::Tensor rank = argsort_rows(argsort_rows(scores));
    const at::Tensor is_start = rank < at::tensor(starts, at::kLong).unsqueeze(1);
    // Position t is masked when a span starts at one of t − k + 1 .. t.
    at::Tensor masked = is_start.clone();
    for (int64_t shift = 1; shift < k; ++shift) {
      masked.slice(1, shift).logical_or_(is_start.slice(1, 0, tokens - shift));
    }
    return masked;
  }
  const int64_t units = tokens / k;
  const at::Tensor scores = at::empty({batch, units}, at::kFloat).uniform_(0.0, 1.0, generator);
  std::vector<int64_t> counts(static_cast<size_t>(batch));
  const auto* rp = r.data_ptr<double>();
  for (int64_t b = 0; b < batch; ++b) {
    const double ratio = masked_fraction(config_.training_curve, rp[b]);
    counts[static_cast<size_t>(b)] = std::clamp<int64_t>(
        static_cast<int64_t>(std::ceil(ratio * static_cast<double>(units))), 1, units);
  }
  // A unit is masked when its rank among the sample's scores is below the sample's count: a
  // uniformly random subset of that size.
  const at::Tensor rank = argsort_rows(argsort_rows(scores));
  const at::Tensor masked_units = rank < at::tensor(counts, at::kLong).unsqueeze(1);
  return masked_units.repeat_interleave(k, 1);
}

ScheduleLoss MaskGitSchedule::loss(const ScheduleModels& models, const TrainingBatch& batch,
                                   at::Generator& generator) {
  batch.tokens.validate();
  TESSERA_CHECK(batch.tokens.discrete(), "maskgit schedule: training needs token ids");
  check_models(models, batch.tokens.grids);
  Backbone& backbone = models.backbone;
  const at::Device device = backbone.device();
  const at::Tensor ids = batch.tokens.scales[0].to(device, at::kLong);
  const int64_t B = ids.size(0), L = ids.size(1), W = backbone.width();
  const int64_t mask_id = models.head.vocab_size();
  const at::Tensor labels = training_labels(backbone, batch, B, "maskgit schedule");

  const at::Tensor mask = draw_training_mask(B, L, generator).to(device);
  const at::Tensor inputs = at::where(mask, at::full_like(ids, mask_id), ids);
  BackboneForwardOptions forward_options;
  forward_options.generator = generator;
  BackboneOutput out =
      backbone.forward(inputs, labels, training_mask(batch.tokens.grids), forward_options);
  const int64_t c = config_.condition_tokens;
  const at::Tensor hidden = out.hidden.slice(1, c, c + L);  // [B, L, W]
  // Cross-entropy on the masked positions only.
  const at::Tensor selected = hidden.masked_select(mask.unsqueeze(-1)).view({-1, W});
  HeadLossOptions head_options;
  head_options.generator = generator;
  if (at::Tensor cond = head_condition(models.head, out.condition, L); cond.defined()) {
    const int64_t D = cond.size(-1);
    head_options.condition = cond.view({B, L, D}).masked_select(mask.unsqueeze(-1)).view({-1, D});
  }
  HeadLoss head_loss = models.head.loss(selected, ids.masked_select(mask), head_options);
  ScheduleLoss result;
  result.loss = head_loss.loss;
  result.terms = head_loss.terms;
  result.predicted_tokens = selected.size(0);
  result.terms.emplace_back(
      "mask_ratio", static_cast<double>(result.predicted_tokens) / static_cast<double>(B * L));
  return result;
}

Tokens MaskGitSchedule::sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                                    const std::vector<TokenGridSize>& grids,
                                    const GenerationOptions& options,
                                    const CheckedHeadOptions& head, SampleRngs& rngs) {
  const MaskGitSamplingOptions& sampling = sampling_options(options);
  const int64_t B = sample_batch_size(models.backbone, labels, rngs, options, "maskgit schedule");
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);
  Backbone& backbone = models.backbone;
  const at::Device device = backbone.device();
  const TokenGridSize grid = grids[0];
  const int64_t L = grid.count(), W = backbone.width(), c = config_.condition_tokens;
  const int64_t k = config_.span_length, units = L / k, T = sampling.steps;
  const int64_t mask_id = models.head.vocab_size();
  const at::Tensor run_labels = backbone_labels(backbone, labels, options);
  const BlockMask full = training_mask(grids);

  at::Tensor ids = at::full({B, L}, mask_id, at::TensorOptions().dtype(at::kLong).device(device));
  at::Tensor unknown = at::ones({B, units}, at::TensorOptions().dtype(at::kBool).device(device));
  int64_t masked = units;
  for (int64_t s = 0; s < T; ++s) {
    // A curve that reaches one masked unit early commits it one step before the last; nothing is
    // left to do then.
    if (masked == 0) break;
    BackboneOutput out = backbone.forward(maybe_double(ids, options), run_labels, full);
    const int64_t rows = out.hidden.size(0);
    const at::Tensor hidden = out.hidden.slice(1, c, c + L).reshape({rows * L, W});
    const int64_t masked_after = masked_after_step(sampling.curve, units, s, T, masked);
    HeadStep step;
    step.progress.step = s;
    step.progress.num_steps = T;
    step.progress.num_tokens = L;
    step.progress.masked_after_step = masked_after * k;
    step.condition = head_condition(models.head, out.condition, L);
    HeadSample drawn = head.draw(models.head, hidden, rngs, step);
    const at::Tensor values = drawn.values.to(device, at::kLong).view({B, L});
    const at::Tensor log_p = drawn.log_probabilities.to(device, at::kDouble).view({B, L});
    const at::Tensor unknown_tokens = unknown.repeat_interleave(k, 1);
    const at::Tensor sampled = at::where(unknown_tokens, values, ids);
    // One Gumbel per position per step, whatever the batch (Note [Schedule batch invariance]).
    const at::Tensor gumbel = rngs.gumbel({L}).to(device, at::kDouble);
    const double anneal =
        sampling.choice_temperature * (1.0 - static_cast<double>(s + 1) / static_cast<double>(T));
    at::Tensor confidence = log_p + anneal * gumbel;  // [B, L]; see Note [MaskGIT decoding]
    if (k > 1) {
      const at::Tensor chunks = confidence.view({B, units, k});
      confidence =
          sampling.span_scoring == SpanScoring::max ? std::get<0>(chunks.max(2)) : chunks.mean(2);
    }
    const at::Tensor remask = lowest_confidence(confidence, unknown, masked_after);
    ids = at::where(remask.repeat_interleave(k, 1), at::full_like(ids, mask_id), sampled);
    unknown = remask;
    masked = masked_after;
  }
  return Tokens{{ids}, {grid}};
}

}  // namespace tessera
