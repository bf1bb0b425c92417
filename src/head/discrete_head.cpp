#include "tessera/head/discrete_head.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "head/head_modules.h"
#include "head/head_util.h"
#include "tessera/head/token_sampling.h"

namespace tessera {

DiscreteHead::DiscreteHead(const DiscreteHeadConfig& config, uint64_t seed)
    : DiscreteHead(config, std::make_shared<head_detail::DiscreteProjectionNet>(config, seed)) {}

DiscreteHead::DiscreteHead(const DiscreteHeadConfig& config,
                           std::shared_ptr<head_detail::DiscreteProjectionNet> net)
    : Head(net->root()), config_(config), net_(std::move(net)) {}

DiscreteHead::~DiscreteHead() = default;

HeadConfig DiscreteHead::config() const {
  HeadConfig out;
  out.kind = HeadKind::discrete;
  out.discrete = config_;
  return out;
}

at::Tensor DiscreteHead::logits(const at::Tensor& hidden, const at::Tensor& condition) {
  return net_->forward(hidden, condition);
}

at::Tensor DiscreteHead::distribution(const at::Tensor& hidden, const Guidance& guidance,
                                      const HeadSamplingOptions& options, const HeadStep& step) {
  const CheckedHeadOptions checked(guidance, options);
  return checked_distribution(hidden, checked.guidance(), checked.options(), step);
}

at::Tensor DiscreteHead::checked_distribution(const at::Tensor& hidden, const Guidance& guidance,
                                              const HeadSamplingOptions& options,
                                              const HeadStep& step) {
  const double weight = guidance.weight_at(step.progress);
  at::NoGradGuard no_grad;
  at::Tensor cond_logits, uncond_logits;
  if (guidance.doubles_batch()) {
    auto [cond_hidden, uncond_hidden] = split_guidance_batch(hidden, "DiscreteHead hidden");
    at::Tensor cond_condition, uncond_condition;
    if (step.condition.defined()) {
      std::tie(cond_condition, uncond_condition) =
          split_guidance_batch(step.condition, "DiscreteHead condition");
    }
    cond_logits = logits(cond_hidden, cond_condition);
    // With w = 1 the conditional logits alone are the guided ones; skip the other half.
    if (weight != 1.0) uncond_logits = logits(uncond_hidden, uncond_condition);
  } else {
    cond_logits = logits(hidden, step.condition);
  }
  return token_distribution(cond_logits, uncond_logits, weight, options.temperature,
                            options.discrete);
}

HeadSample DiscreteHead::sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                                     const HeadSamplingOptions& options, SampleRngs& rngs,
                                     const HeadStep& step) {
  at::Tensor probs = checked_distribution(hidden, guidance, options, step);
  head_detail::positions_per_sample(probs.size(0), rngs.size(), "DiscreteHead::sample");
  TokenDraw draw = draw_tokens(probs, options.discrete.gumbel_max, rngs);
  return {draw.ids, draw.probabilities, draw.log_probabilities};
}

HeadLoss DiscreteHead::loss(const at::Tensor& hidden, const at::Tensor& targets,
                            const HeadLossOptions& options) {
  at::Tensor out = logits(hidden, options.condition);
  TESSERA_CHECK(targets.defined() && targets.dim() == 1 && targets.size(0) == out.size(0) &&
                    !at::isFloatingType(targets.scalar_type()),
                "DiscreteHead::loss: targets must be integer ids [{}], got {} {}", out.size(0),
                targets.defined() ? fmt::format("{}", targets.scalar_type()) : std::string(),
                head_detail::shape_text(targets));
  if (targets.numel() > 0) {
    TESSERA_CHECK(targets.min().item<int64_t>() >= 0 &&
                      targets.max().item<int64_t>() < config_.vocab_size,
                  "DiscreteHead::loss: target ids must be in [0, {}), got ids in [{}, {}]",
                  config_.vocab_size, targets.min().item<int64_t>(), targets.max().item<int64_t>());
  }
  at::Tensor per_row =
      at::cross_entropy_loss(out.to(at::kFloat), targets.to(out.device(), at::kLong), {},
                             at::Reduction::None, -100, config_.label_smoothing);
  HeadLoss result;
  result.loss = head_detail::weighted_mean(per_row, options.weights, 1, "DiscreteHead::loss");
  result.terms.emplace_back("cross_entropy", result.loss.item<double>());
  return result;
}

}  // namespace tessera
