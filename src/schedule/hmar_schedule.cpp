#include "tessera/schedule/hmar_schedule.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "schedule/next_scale_detail.h"
#include "schedule/schedule_util.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/nn/guidance_batch.h"

namespace tessera {

using namespace schedule_detail;

namespace {

constexpr const char* kWho = "hmar";

// Whether the backbone has the mask-indicator channel (Note [HMAR masked refinement]).
bool has_mask_channel(const ScheduleModels& models) {
  return models.backbone.config().input_channels == models.tokenizer->token_channels() + 1;
}

// area_down(Phi_s(up(embed(ids))), pn_s) as [B, n, Cvae]: a token's own share of f̂ seen at its
// scale (HMAR's get_next_mask_input / idxBl_to_mask_input).
at::Tensor own_contribution(MultiScaleTokenizer& tokenizer, int64_t scale, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  at::Tensor f = tokenizer.empty_f_hat(ids.size(0));
  tokenizer.add_scale_ids(f, scale, ids);
  return tokenizer.next_scale_input(f, scale);
}

// [x + own·(1 − m), m]: see Note [HMAR masked refinement]. `masked` float [B, n].
at::Tensor masked_inputs(const at::Tensor& ns_input, const at::Tensor& own,
                         const at::Tensor& masked) {
  const at::Tensor m = masked.unsqueeze(-1).to(ns_input.options());
  return at::cat({ns_input + own.to(ns_input.options()) * (1 - m), m}, -1);
}

// [x, 0]: the next-scale input of a backbone that has the indicator channel.
at::Tensor with_zero_indicator(const at::Tensor& x) {
  return at::cat({x, at::zeros({x.size(0), x.size(1), 1}, x.options())}, -1);
}

}  // namespace

void HmarScheduleConfig::validate() const {
  TESSERA_CHECK(masked_training_fraction >= 0.0 && masked_training_fraction <= 1.0,
                "hmar: masked_training_fraction must be in [0, 1], got {}",
                masked_training_fraction);
  sampling.validate();
}

HmarSchedule::HmarSchedule(HmarScheduleConfig config) : config_(std::move(config)) {
  config_.validate();
}

const HmarSamplingOptions& HmarSchedule::sampling_options(const GenerationOptions& options) const {
  return resolve_sampling(options.schedule, config_.sampling, kWho);
}

void HmarSchedule::check_sampling(const std::vector<TokenGridSize>& grids,
                                  const GenerationOptions& options) const {
  sampling_options(options).validate();
  refinement_plan(grids, options);
}

std::vector<int64_t> HmarSchedule::refinement_plan(const std::vector<TokenGridSize>& grids,
                                                   const GenerationOptions& options) const {
  const HmarSamplingOptions& sampling = sampling_options(options);
  const std::vector<int64_t> sides = pyramid_sides(grids, kWho);
  const auto S = static_cast<int64_t>(sides.size());
  TESSERA_CHECK(static_cast<int64_t>(sampling.refinement_steps.size()) <= S,
                "hmar: refinement_steps has {} entries for a pyramid of {} scales",
                sampling.refinement_steps.size(), S);
  std::vector<int64_t> plan(static_cast<size_t>(S), 0);
  for (size_t s = 0; s < sampling.refinement_steps.size(); ++s) {
    plan[s] = sampling.refinement_steps[s];
  }
  if (!sampling.mask_schedule.empty()) {
    TESSERA_CHECK(static_cast<int64_t>(sampling.mask_schedule.size()) == S,
                  "hmar: mask_schedule has {} entries for a pyramid of {} scales",
                  sampling.mask_schedule.size(), S);
    for (int64_t s = 0; s < S; ++s) {
      const std::vector<int64_t>& counts = sampling.mask_schedule[static_cast<size_t>(s)];
      int64_t total = 0;
      for (int64_t c : counts) total += c;
      TESSERA_CHECK(total == sides[s] * sides[s],
                    "hmar: mask_schedule[{}] = [{}] commits {} tokens, but scale {} has {}", s,
                    fmt::join(counts, ", "), total, s, sides[s] * sides[s]);
      plan[s] = static_cast<int64_t>(counts.size()) - 1;
    }
  }
  TESSERA_CHECK(plan[0] == 0,
                "hmar: scale 0 holds the backbone's condition rows (the class token); it cannot "
                "be refined, got refinement_steps[0] = {}",
                plan[0]);
  for (int64_t s = 1; s < S; ++s) {
    const int64_t n = sides[s] * sides[s];
    // Every step must commit at least one position: R + 1 steps over n tokens.
    TESSERA_CHECK(plan[s] <= n - 1,
                  "hmar: scale {} has {} tokens and can take at most {} refinement steps, got {}",
                  s, n, n - 1, plan[s]);
  }
  return plan;
}

int64_t HmarSchedule::masked_after(const HmarSamplingOptions& sampling, int64_t s, int64_t n,
                                   int64_t r, int64_t T, int64_t masked_before) {
  if (sampling.mask_schedule.empty()) {
    return masked_after_step(sampling.refinement_curve, n, r, T, masked_before);
  }
  const std::vector<int64_t>& counts = sampling.mask_schedule[static_cast<size_t>(s)];
  int64_t committed = 0;
  for (int64_t k = 0; k <= r; ++k) committed += counts[static_cast<size_t>(k)];
  return n - committed;
}

void HmarSchedule::check_models(const ScheduleModels& models,
                                const std::vector<TokenGridSize>& grids) const {
  check_next_scale_models(models, grids, kWho, {0, 1});
  if (models.refinement_head != nullptr) {
    const Head& r = *models.refinement_head;
    TESSERA_CHECK(r.kind() == HeadKind::discrete,
                  "hmar: the refinement head must be discrete (a softmax over the codebook)");
    TESSERA_CHECK(r.vocab_size() == models.head.vocab_size() &&
                      r.hidden_width() == models.head.hidden_width(),
                  "hmar: the refinement head must predict {} ids from width {} like the head, "
                  "got {} ids from width {}",
                  models.head.vocab_size(), models.head.hidden_width(), r.vocab_size(),
                  r.hidden_width());
  }
}

namespace {

// The masked-prediction pass runs HMAR's mask tail: the backbone's branch blocks when it has
// them, the refinement head when there is one (Note [HMAR masked refinement]).
bool has_branch(const ScheduleModels& models) {
  return models.backbone.config().branch_blocks > 0;
}
Head& masked_prediction_head(const ScheduleModels& models) {
  return models.refinement_head != nullptr ? *models.refinement_head : models.head;
}

}  // namespace

BlockMask HmarSchedule::training_mask(const std::vector<TokenGridSize>& grids) const {
  return BlockMask::block_diagonal(pyramid_layout(grids, kWho));
}

int64_t HmarSchedule::num_steps_impl(const std::vector<TokenGridSize>& grids,
                                     const GenerationOptions& options) const {
  int64_t steps = 0;
  for (int64_t r : refinement_plan(grids, options)) steps += 1 + r;
  return steps;
}

ScheduleLoss HmarSchedule::loss(const ScheduleModels& models, const TrainingBatch& batch,
                                at::Generator& generator) {
  const std::vector<at::Tensor> ids = batch_ids(batch, kWho);
  check_models(models, batch.tokens.grids);
  MultiScaleTokenizer& tokenizer = multiscale_tokenizer(models, kWho);
  const TokenLayout layout = pyramid_layout(batch.tokens.grids, kWho);
  const int64_t B = ids.front().size(0), S = layout.num_segments();
  const at::Tensor tf = teacher_forcing_inputs(models, batch, ids, layout, kWho)
                            .to(models.backbone.device(), at::kFloat);
  const bool indicator = has_mask_channel(models);

  bool masked_batch = false;
  if (config_.masked_training_fraction > 0) {
    TESSERA_CHECK(indicator,
                  "hmar: masked training needs the mask-indicator channel: a backbone with "
                  "input_channels = Cvae + 1 = {}, got {}",
                  models.tokenizer->token_channels() + 1, models.backbone.config().input_channels);
    const double u = at::empty({1}, at::kDouble).uniform_(0.0, 1.0, generator).item<double>();
    masked_batch = u < config_.masked_training_fraction;
  }

  at::Tensor inputs = tf;
  std::vector<at::Tensor> row_weights;
  double ratio = 0.0;
  if (masked_batch) {
    // mp_trainer.py: one ratio per batch, ceil(n·p) masked positions per scale s >= 1.
    ratio = at::empty({1}, at::kDouble).uniform_(0.0, 1.0, generator).item<double>();
    std::vector<at::Tensor> parts;
    row_weights.push_back(at::zeros({B, layout.segment_length(0)}, at::kFloat));
    for (int64_t s = 1; s < S; ++s) {
      const int64_t n = layout.segment_length(s);
      const int64_t count = std::clamp<int64_t>(
          static_cast<int64_t>(std::ceil(static_cast<double>(n) * ratio)), 1, n);
      // A uniformly random subset of `count` positions per sample: the lowest of n uniforms.
      const at::Tensor u = at::empty({B, n}, at::kFloat).uniform_(0.0, 1.0, generator);
      const at::Tensor m =
          lowest_confidence(u, at::ones({B, n}, at::kBool), count).to(at::kFloat);
      const int64_t off = layout.segment_begin(s) - layout.segment_length(0);
      const at::Tensor x = tf.slice(1, off, off + n);
      parts.push_back(masked_inputs(x, own_contribution(tokenizer, s, ids[s]).to(x.device()),
                                    m.to(x.device())));
      row_weights.push_back(m);
    }
    inputs = at::cat(parts, 1);
  } else if (indicator) {
    inputs = with_zero_indicator(tf);
  }

  BackboneForwardOptions fo;
  fo.generator = generator;  // condition dropout
  fo.branch = masked_batch && has_branch(models);
  const BackboneOutput out = models.backbone.forward(inputs, batch.labels,
                                                     BlockMask::block_diagonal(layout), fo);
  ScheduleLoss l = pyramid_cross_entropy(
      masked_batch ? masked_prediction_head(models) : models.head, out.hidden, out.condition, ids,
      layout,
      scale_loss_weights(config_.loss_weighting, pyramid_sides(batch.tokens.grids, kWho)),
      row_weights);
  l.terms.emplace_back("mask_ratio", ratio);
  return l;
}

Tokens HmarSchedule::sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                                 const std::vector<TokenGridSize>& grids,
                                 const GenerationOptions& options,
                                 const CheckedHeadOptions& request, SampleRngs& rngs) {
  at::NoGradGuard no_grad;
  EvalModeGuard eval(models);  // no condition dropout while sampling
  const HmarSamplingOptions& sampling = sampling_options(options);
  const CheckedHeadOptions unguided = request.unguided();
  MultiScaleTokenizer& tokenizer = multiscale_tokenizer(models, kWho);
  Backbone& backbone = models.backbone;
  const TokenLayout layout = pyramid_layout(grids, kWho);
  const std::vector<int64_t> plan = refinement_plan(grids, options);
  const SamplingLabels sl = sampling_labels(backbone, labels, options.guidance, rngs, kWho);
  const int64_t B = sl.batch, S = layout.num_segments(), W = backbone.width();
  const bool indicator = has_mask_channel(models);
  bool refining = false;
  for (int64_t r : plan) refining |= r > 0;
  TESSERA_CHECK(!refining || indicator,
                "hmar: refinement needs the mask-indicator channel: a backbone with "
                "input_channels = Cvae + 1 = {}, got {}",
                models.tokenizer->token_channels() + 1, backbone.config().input_channels);
  const BlockMask full = BlockMask::block_diagonal(layout);
  const int64_t total_steps = num_steps(grids, options);

  // One backbone call over the rows of one scale (no cache: the mask is block-diagonal), then
  // the head's draw for every row of the scale.
  auto run = [&](int64_t s, const at::Tensor& inputs, bool guided, bool masked_prediction,
                 const HeadStep& base) {
    const int64_t begin = layout.segment_begin(s), end = layout.segment_end(s), n = end - begin;
    const CheckedHeadOptions& checked = guided ? request : unguided;
    const bool doubled = checked.guidance().doubles_batch();
    at::Tensor x = inputs;
    if (x.defined() && doubled) x = repeat_for_guidance(x);
    const at::Tensor run_labels = doubled ? sl.run_labels : sl.labels;
    BackboneForwardOptions fo;
    fo.begin = begin;
    fo.branch = masked_prediction && has_branch(models);
    const BackboneOutput out = backbone.forward(x, run_labels, full.rows(begin, end), fo);
    Head& head = masked_prediction ? masked_prediction_head(models) : models.head;
    HeadStep step = base;
    step.condition = head_condition_rows(head, out.condition, n);
    const int64_t rows = (doubled ? 2 * B : B) * n;
    return checked.draw(head, out.hidden.reshape({rows, W}), rngs, step);
  };

  at::Tensor f_hat = tokenizer.empty_f_hat(B);
  Tokens result;
  result.grids = grids;
  int64_t step_index = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = layout.segment_length(s);
    const int64_t T = 1 + plan[s];
    at::Tensor ns_input;  // area_down(f̂_{<s}, pn_s); scale 0 is the condition rows
    if (s > 0) ns_input = tokenizer.next_scale_input(f_hat, s).to(backbone.device(), at::kFloat);

    HeadStep base;
    base.progress.num_steps = total_steps;
    base.progress.scale = s;
    base.progress.num_scales = S;
    if (plan[s] > 0) base.progress.num_tokens = n;

    // The next-scale pass: every position drawn.
    base.progress.step = step_index;
    int64_t masked_count = n;
    if (plan[s] > 0) {
      masked_count = masked_after(sampling, s, n, 0, T, n);
      base.progress.masked_after_step = masked_count;
    } else {
      masked_count = 0;
    }
    const at::Tensor first_inputs =
        ns_input.defined() && indicator ? with_zero_indicator(ns_input) : ns_input;
    HeadSample drawn = run(s, first_inputs, /*guided=*/true, /*masked_prediction=*/false, base);
    at::Tensor ids = drawn.values.reshape({B, n}).to(at::kLong);
    TESSERA_CHECK(!refining || drawn.probabilities.defined(),
                  "hmar: refinement ranks by the drawn ids' probabilities; the head gave none");
    at::Tensor probs = drawn.probabilities.defined()
                           ? drawn.probabilities.reshape({B, n}).to(at::kFloat)
                           : at::Tensor();
    at::Tensor masked = masked_count > 0
                            ? lowest_confidence(probs.cpu(), at::ones({B, n}, at::kBool),
                                                masked_count)
                            : at::zeros({B, n}, at::kBool);
    auto report = [&](int64_t refinement, const at::Tensor& committed) {
      if (!observer_) return;
      ScaleStepRecord rec;
      rec.step = step_index;
      rec.scale = s;
      rec.refinement = refinement;
      rec.ids = ids.cpu();
      rec.probabilities = probs.defined() ? probs.cpu() : at::Tensor();
      rec.committed = committed.cpu();
      rec.masked = masked.cpu().clone();
      observer_(rec);
    };
    report(0, masked.logical_not());
    ++step_index;

    // Refinement: redraw the masked positions with the known ones visible.
    for (int64_t r = 1; r < T; ++r) {
      const at::Tensor own = own_contribution(tokenizer, s, ids).to(ns_input.device());
      const at::Tensor m = masked.to(ns_input.device());
      base.progress.step = step_index;
      const int64_t after = masked_after(sampling, s, n, r, T, masked_count);
      base.progress.masked_after_step = after;
      drawn = run(s, masked_inputs(ns_input, own, m.to(at::kFloat)), sampling.refinement_guidance,
                  /*masked_prediction=*/true, base);
      const at::Tensor new_ids = drawn.values.reshape({B, n}).to(ids.device(), at::kLong);
      const at::Tensor new_probs = drawn.probabilities.reshape({B, n}).to(probs.device(), at::kFloat);
      ids = at::where(m.to(ids.device()), new_ids, ids);
      probs = at::where(m.to(probs.device()), new_probs, probs);
      const at::Tensor before = masked;
      masked = after > 0 ? lowest_confidence(probs.cpu(), before, after)
                         : at::zeros({B, n}, at::kBool);
      masked_count = after;
      report(r, before.logical_and(masked.logical_not()));
      ++step_index;
    }
    tokenizer.add_scale_ids(f_hat, s, ids);
    result.scales.push_back(ids);
  }
  return result;
}

}  // namespace tessera
