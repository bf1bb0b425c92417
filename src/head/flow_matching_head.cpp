#include "tessera/head/flow_matching_head.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "head/head_modules.h"
#include "head/head_util.h"

namespace tessera {
namespace {

using head_detail::shape_text;

// The trunk's time embedding sees 1000·t. See Note [Flow-matching convention].
constexpr double kTimeEmbeddingScale = 1000.0;

std::shared_ptr<head_detail::AdaLnMlpNet> make_net(const FlowMatchingHeadConfig& config,
                                                   uint64_t seed) {
  config.validate();
  return std::make_shared<head_detail::AdaLnMlpNet>(config.mlp, config.mlp.token_channels, seed);
}

}  // namespace

FlowMatchingHead::FlowMatchingHead(const FlowMatchingHeadConfig& config, uint64_t seed)
    : FlowMatchingHead(config, make_net(config, seed)) {}

FlowMatchingHead::FlowMatchingHead(const FlowMatchingHeadConfig& config,
                                   std::shared_ptr<head_detail::AdaLnMlpNet> net)
    : Head(net->root()), config_(config), net_(std::move(net)) {}

FlowMatchingHead::~FlowMatchingHead() = default;

HeadConfig FlowMatchingHead::config() const {
  HeadConfig out;
  out.kind = HeadKind::flow_matching;
  out.flow_matching = config_;
  return out;
}

at::Tensor FlowMatchingHead::velocity(const at::Tensor& x, const at::Tensor& t,
                                      const at::Tensor& z) {
  return net_->forward(x, t * kTimeEmbeddingScale, z);
}

HeadLoss FlowMatchingHead::loss(const at::Tensor& hidden, const at::Tensor& targets,
                                const HeadLossOptions& options) {
  const int64_t channels = config_.mlp.token_channels;
  TESSERA_CHECK(targets.defined() && targets.dim() == 2 && targets.size(1) == channels &&
                    at::isFloatingType(targets.scalar_type()),
                "FlowMatchingHead::loss: targets must be floating point [N, {}], got {}",
                channels, shape_text(targets));
  TESSERA_CHECK(hidden.defined() && hidden.dim() == 2 && hidden.size(0) == targets.size(0),
                "FlowMatchingHead::loss: hidden must be [{}, {}] (one row per target), got {}",
                targets.size(0), config_.mlp.hidden_width, shape_text(hidden));
  const int64_t repeats = config_.batch_multiplier;
  const int64_t rows = targets.size(0) * repeats;
  const at::Device device = hidden.device();

  at::Tensor data = targets.to(at::kFloat).repeat({repeats, 1});
  at::Tensor z = hidden.repeat({repeats, 1});
  at::TensorOptions cpu_float = at::TensorOptions().dtype(at::kFloat);
  at::Tensor t = at::rand({rows}, options.generator, cpu_float).to(device);
  at::Tensor noise = at::randn({rows, channels}, options.generator, cpu_float).to(device);
  at::Tensor x_t = (1.0 - t).unsqueeze(1) * noise + t.unsqueeze(1) * data;
  at::Tensor per_row = (velocity(x_t, t, z) - (data - noise)).pow(2).mean(1);

  HeadLoss result;
  result.loss =
      head_detail::weighted_mean(per_row, options.weights, repeats, "FlowMatchingHead::loss");
  result.terms.emplace_back("mse", result.loss.item<double>());
  return result;
}

HeadSample FlowMatchingHead::sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                                         const HeadSamplingOptions& options, SampleRngs& rngs,
                                         const HeadStep& step) {
  // guidance and options were validated by Head::sample or the request's CheckedHeadOptions.
  const double weight = guidance.weight_at(step.progress);
  const int64_t steps = options.step_annealing.enabled
                            ? options.step_annealing.steps_at(step.progress)
                            : options.flow.steps;
  TESSERA_CHECK(hidden.defined() && hidden.dim() == 2,
                "FlowMatchingHead::sample: hidden must be [N, {}], got {}",
                config_.mlp.hidden_width, shape_text(hidden));
  at::NoGradGuard no_grad;

  at::Tensor z_cond = hidden;
  if (guidance.doubles_batch()) {
    z_cond = split_guidance_batch(hidden, "FlowMatchingHead hidden").first;
  }
  const bool guided = guidance.doubles_batch() && weight != 1.0;
  const int64_t rows = z_cond.size(0);
  const int64_t channels = config_.mlp.token_channels;
  const int64_t positions =
      head_detail::positions_per_sample(rows, rngs.size(), "FlowMatchingHead::sample");
  const at::Device device = hidden.device();

  auto velocity_at = [&](const at::Tensor& x, double time) {
    at::Tensor t = at::full({rows}, time * kTimeEmbeddingScale,
                            at::TensorOptions().dtype(at::kFloat).device(device));
    return guided ? net_->forward_guided(x, t, hidden, weight, channels)
                  : net_->forward(x, t, z_cond);
  };

  at::Tensor x =
      rngs.normal({positions, channels}, device).reshape({rows, channels}) * options.temperature;
  const double dt = 1.0 / static_cast<double>(steps);
  for (int64_t k = 0; k < steps; ++k) {
    const double t0 = static_cast<double>(k) * dt;
    const double t1 = static_cast<double>(k + 1) * dt;
    at::Tensor v0 = velocity_at(x, t0);
    if (options.flow.sampler == FlowSampler::euler) {
      x = x + v0 * dt;
    } else {
      at::Tensor v1 = velocity_at(x + v0 * dt, t1);
      x = x + (v0 + v1) * (0.5 * dt);
    }
  }
  HeadSample result;
  result.values = x;
  return result;
}

}  // namespace tessera
