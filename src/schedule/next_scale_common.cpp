#include "tessera/schedule/next_scale_common.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <numbers>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "schedule/next_scale_detail.h"
#include "schedule/schedule_util.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/nn/guidance_batch.h"

namespace tessera {

std::vector<double> scale_loss_weights(ScaleLossWeighting weighting,
                                       const std::vector<int64_t>& patch_nums) {
  const auto S = static_cast<int64_t>(patch_nums.size());
  TESSERA_CHECK(S >= 1, "scale_loss_weights: the pyramid has no scales");
  for (int64_t pn : patch_nums)
    TESSERA_CHECK(pn >= 1, "scale_loss_weights: scale sides must be >= 1, got {}", pn);
  std::vector<double> w(static_cast<size_t>(S));
  switch (weighting) {
    case ScaleLossWeighting::per_token: {
      double total = 0;
      for (int64_t pn : patch_nums) total += static_cast<double>(pn * pn);
      for (int64_t s = 0; s < S; ++s)
        w[s] = static_cast<double>(patch_nums[s] * patch_nums[s]) / total;
      return w;
    }
    case ScaleLossWeighting::per_scale:
      for (auto& x : w) x = 1.0 / static_cast<double>(S);
      return w;
    case ScaleLossWeighting::lognormal: {
      TESSERA_CHECK(S >= 2, "scale_loss_weights: lognormal needs >= 2 scales (a sample standard "
                            "deviation), got {}", S);
      const double last = static_cast<double>(patch_nums.back());
      std::vector<double> r(static_cast<size_t>(S));
      double mean = 0;
      for (int64_t s = 0; s < S; ++s) mean += (r[s] = static_cast<double>(patch_nums[s]) / last);
      mean /= static_cast<double>(S);
      double var = 0;
      for (double x : r) var += (x - mean) * (x - mean);
      const double sd = std::sqrt(var / static_cast<double>(S - 1));
      TESSERA_CHECK(sd > 0, "scale_loss_weights: lognormal needs scales of different sides");
      double total = 0;
      for (int64_t s = 0; s < S; ++s) {
        const double z = (r[S - 1 - s] - mean) / sd;  // HMAR reverses the ratios
        w[s] = std::exp(-0.5 * z * z) / std::sqrt(2 * std::numbers::pi);
        total += w[s];
      }
      for (auto& x : w) x /= total;
      return w;
    }
  }
  TESSERA_FAIL("scale_loss_weights: unknown weighting {}", static_cast<int>(weighting));
}

namespace schedule_detail {

MultiScaleTokenizer& multiscale_tokenizer(const ScheduleModels& models, const char* who) {
  TESSERA_CHECK(models.tokenizer != nullptr,
                "{}: needs the tokenizer (a MultiScaleVqVae): the inputs of scale s are "
                "area_down(f_hat) of the earlier scales; ScheduleModels::tokenizer is null",
                who);
  MultiScaleTokenizer* ms = models.tokenizer->as_multiscale();
  TESSERA_CHECK(ms != nullptr,
                "{}: the tokenizer must be a MultiScaleVqVae (VAR's multi-scale residual VQ), got "
                "a '{}' tokenizer; for a continuous tokenizer use the continuous_next_scale "
                "schedule (FlowAR-style)",
                who, tokenizer_kind_name(models.tokenizer->config().kind));
  return *ms;
}

std::vector<int64_t> pyramid_sides(const std::vector<TokenGridSize>& grids, const char* who) {
  TESSERA_CHECK(!grids.empty(), "{}: no token grids", who);
  std::vector<int64_t> sides;
  for (size_t s = 0; s < grids.size(); ++s) {
    TESSERA_CHECK(grids[s].height >= 1 && grids[s].height == grids[s].width,
                  "{}: scale {} has a {}x{} grid; next-scale pyramids are square", who, s,
                  grids[s].height, grids[s].width);
    TESSERA_CHECK(s == 0 || grids[s].height > grids[s - 1].height,
                  "{}: scale sides must increase, scale {} has {} after {}", who, s,
                  grids[s].height, grids[s - 1].height);
    sides.push_back(grids[s].height);
  }
  return sides;
}

TokenLayout pyramid_layout(const std::vector<TokenGridSize>& grids, const char* who) {
  return TokenLayout::pyramid(pyramid_sides(grids, who));
}

void check_next_scale_models(const ScheduleModels& models, const std::vector<TokenGridSize>& grids,
                             const char* who, const std::vector<int64_t>& extra_channels) {
  check_no_decoder(models, who);
  MultiScaleTokenizer& ms = multiscale_tokenizer(models, who);
  const std::vector<int64_t> sides = pyramid_sides(grids, who);
  TESSERA_CHECK(sides == ms.patch_nums(),
                "{}: the grids' sides {} are not the tokenizer's patch_nums {}", who,
                fmt::join(sides, ","), fmt::join(ms.patch_nums(), ","));
  const BackboneConfig& bc = models.backbone.config();
  std::vector<int64_t> segments;
  for (int64_t pn : sides) segments.push_back(pn * pn);
  TESSERA_CHECK(bc.segments == segments,
                "{}: the backbone's segments {} are not the pyramid's {} (one per scale, see "
                "var_style_config)",
                who, fmt::join(bc.segments, ","), fmt::join(segments, ","));
  TESSERA_CHECK(bc.input == InputKind::vectors,
                "{}: the backbone must take vectors (word_embed of f_hat features), not token ids",
                who);
  const int64_t cvae = models.tokenizer->token_channels();
  bool channels_ok = false;
  for (int64_t extra : extra_channels) channels_ok |= bc.input_channels == cvae + extra;
  TESSERA_CHECK(channels_ok,
                "{}: the backbone takes {} input channels; the tokenizer's Cvae is {} (allowed: "
                "Cvae + {})",
                who, bc.input_channels, cvae, fmt::join(extra_channels, " or Cvae + "));
  TESSERA_CHECK(bc.condition_tokens == segments.front(),
                "{}: the backbone must hold its condition (VAR's sos) in the first scale's {} "
                "rows, but has {} condition tokens",
                who, segments.front(), bc.condition_tokens);
  const Head& head = models.head;
  TESSERA_CHECK(head.kind() == HeadKind::discrete,
                "{}: the head must be discrete (a softmax over the codebook); next-scale "
                "schedules take discrete scales only, not a flow or diffusion head",
                who);
  TESSERA_CHECK(head.vocab_size() == models.tokenizer->vocab_size(),
                "{}: the head predicts {} ids but the tokenizer's codebook has {}", who,
                head.vocab_size(), models.tokenizer->vocab_size());
  TESSERA_CHECK(head.hidden_width() == bc.width,
                "{}: the head takes hidden width {} but the backbone's width is {}", who,
                head.hidden_width(), bc.width);
  const HeadConfig hc = head.config();
  if (hc.discrete.projection == DiscreteProjection::adaln) {
    TESSERA_CHECK(bc.num_classes > 0 && hc.discrete.condition_width == bc.width,
                  "{}: an AdaLN head needs the backbone's class condition of width {} (a "
                  "class-conditional backbone), got condition_width {} and {} classes",
                  who, bc.width, hc.discrete.condition_width, bc.num_classes);
  }
}

at::Tensor head_condition_rows(const Head& head, const at::Tensor& condition, int64_t positions) {
  if (head.config().discrete.projection != DiscreteProjection::adaln) return {};
  TESSERA_CHECK(condition.defined(), "next-scale: the AdaLN head needs the backbone's condition");
  const int64_t R = condition.size(0), D = condition.size(1);
  return condition.unsqueeze(1).expand({R, positions, D}).reshape({R * positions, D});
}

ScheduleLoss pyramid_cross_entropy(Head& head, const at::Tensor& hidden,
                                   const at::Tensor& condition, const std::vector<at::Tensor>& ids,
                                   const TokenLayout& layout,
                                   const std::vector<double>& scale_weights,
                                   const std::vector<at::Tensor>& row_weights) {
  const int64_t B = hidden.size(0), W = hidden.size(2), S = layout.num_segments();
  const bool by_rows = !row_weights.empty();
  std::vector<double> combine(static_cast<size_t>(S), 0.0);
  std::vector<double> row_sums(static_cast<size_t>(S), 0.0);
  if (by_rows) {
    double total = 0;
    for (int64_t s = 0; s < S; ++s) total += (row_sums[s] = row_weights[s].sum().item<double>());
    TESSERA_CHECK(total > 0, "next-scale loss: no row is predicted");
    for (int64_t s = 0; s < S; ++s) combine[s] = row_sums[s] / total;
  } else {
    combine = scale_weights;
  }
  ScheduleLoss out;
  at::Tensor total;
  std::vector<std::pair<std::string, double>> per_scale;
  for (int64_t s = 0; s < S; ++s) {
    if (combine[s] == 0.0) continue;
    const int64_t n = layout.segment_length(s);
    const at::Tensor h = hidden.slice(1, layout.segment_begin(s), layout.segment_end(s))
                             .reshape({B * n, W});
    HeadLossOptions lo;
    lo.condition = head_condition_rows(head, condition, n);
    if (by_rows) lo.weights = row_weights[s].reshape({B * n}).to(h.device(), at::kFloat);
    HeadLoss l = head.loss(h, ids[s].reshape({B * n}).to(h.device()), lo);
    const at::Tensor term = l.loss * combine[s];
    total = total.defined() ? total + term : term;
    per_scale.emplace_back(fmt::format("cross_entropy_scale_{}", s), l.loss.item<double>());
    out.predicted_tokens += by_rows ? static_cast<int64_t>(std::llround(row_sums[s])) : B * n;
  }
  out.loss = total;
  out.terms.emplace_back("cross_entropy", total.item<double>());
  for (auto& t : per_scale) out.terms.push_back(std::move(t));
  return out;
}

std::vector<at::Tensor> batch_ids(const TrainingBatch& batch, const char* who) {
  batch.tokens.validate();
  TESSERA_CHECK(batch.tokens.discrete(), "{}: training needs codebook ids, got vectors", who);
  return batch.tokens.scales;
}

at::Tensor teacher_forcing_inputs(const ScheduleModels& models, const TrainingBatch& batch,
                                  const std::vector<at::Tensor>& ids, const TokenLayout& layout,
                                  const char* who) {
  const int64_t B = ids.front().size(0);
  const int64_t rows = layout.length() - layout.segment_length(0);
  MultiScaleTokenizer& tokenizer = multiscale_tokenizer(models, who);
  const int64_t C = models.tokenizer->token_channels();
  if (batch.scale_inputs.defined()) {
    const at::Tensor& x = batch.scale_inputs;
    TESSERA_CHECK(x.dim() == 3 && x.size(0) == B && x.size(1) == rows && x.size(2) == C &&
                      at::isFloatingType(x.scalar_type()),
                  "{}: scale_inputs must be float [{}, {}, {}] (teacher_forcing_input), got {} {}",
                  who, B, rows, C, x.scalar_type(), x.sizes());
    return x;
  }
  at::NoGradGuard no_grad;  // the tokenizer is not trained by the generator's loss
  return tokenizer.teacher_forcing_input(ids);
}

SamplingLabels sampling_labels(const Backbone& backbone, const at::Tensor& labels,
                               const Guidance& guidance, const SampleRngs& rngs, const char* who) {
  // `guidance` was validated once, by Schedule::sample.
  SamplingLabels out;
  out.batch = labels.defined() ? labels.size(0) : rngs.size();
  TESSERA_CHECK(out.batch == rngs.size(), "{}: {} labels but {} sample generators", who,
                out.batch, rngs.size());
  TESSERA_CHECK(out.batch >= 1, "{}: nothing to sample (batch 0)", who);
  const bool conditional = backbone.config().num_classes > 0;
  TESSERA_CHECK(labels.defined() == conditional,
                "{}: the backbone is {} but labels were {}", who,
                conditional ? "class-conditional" : "unconditional",
                labels.defined() ? "given" : "not given");
  TESSERA_CHECK(!guidance.doubles_batch() || conditional,
                "{}: classifier-free guidance needs a class-conditional backbone", who);
  if (labels.defined()) {
    TESSERA_CHECK(labels.dim() == 1 && !at::isFloatingType(labels.scalar_type()),
                  "{}: labels must be int64 [B], got {} {}", who, labels.scalar_type(),
                  labels.sizes());
    out.labels = labels.to(backbone.device(), at::kLong);
    out.run_labels = guidance.doubles_batch()
                         ? guidance_labels(out.labels, backbone.null_class())
                         : out.labels;
  }
  return out;
}

}  // namespace schedule_detail
}  // namespace tessera
