#pragma once
// A flow-matching head (rectified flow, as FlowAR's per-token flow loss): the same AdaLN MLP trunk
// as the diffusion head predicts a velocity.
//
// Note [Flow-matching convention]
// t runs from 0 (noise) to 1 (data): x_t = (1 − t)·n + t·x_1 with n ~ N(0, I), and the target
// velocity is dx_t/dt = x_1 − n. Training draws t uniform in [0, 1) and minimises the mean over
// channels of (v − v̂)². The trunk's sinusoidal time embedding sees 1000·t, the range of the
// diffusion head's timesteps, so both heads share the trunk's frequency band. Sampling starts at
// x_0 = temperature·n and integrates dx/dt = v̂ over `steps` uniform steps of t: Euler
// (x += Δt·v̂(x, t)) or Heun (an Euler predictor, then the average of the two slopes). Guidance
// combines the velocities (Note [Guidance batch layout]).
//
// Parameter names are those of DiffusionHead's trunk (`net.…`), with token_channels outputs.

#include <ATen/core/Tensor.h>

#include <memory>

#include "tessera/head/head.h"

namespace tessera {

namespace head_detail {
class AdaLnMlpNet;
}

class FlowMatchingHead final : public Head {
 public:
  /// Fresh parameters, initialised as the diffusion head's trunk, from `seed`.
  explicit FlowMatchingHead(const FlowMatchingHeadConfig& config, uint64_t seed = 0);
  ~FlowMatchingHead() override;

  const FlowMatchingHeadConfig& flow_config() const { return config_; }  ///< Its configuration.

  /// The predicted velocity [N, C] at points x [N, C], times t [N] in [0, 1] and backbone vectors
  /// z [N, hidden_width]; differentiable.
  at::Tensor velocity(const at::Tensor& x, const at::Tensor& t, const at::Tensor& z);

  // --- Head ---
  HeadConfig config() const override;
  int64_t hidden_width() const override { return config_.mlp.hidden_width; }
  int64_t vocab_size() const override { return 0; }
  int64_t token_channels() const override { return config_.mlp.token_channels; }
  HeadLoss loss(const at::Tensor& hidden, const at::Tensor& targets,
                const HeadLossOptions& options = {}) override;
 protected:
  HeadSample sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                         const HeadSamplingOptions& options, SampleRngs& rngs,
                         const HeadStep& step) override;

 private:
  FlowMatchingHead(const FlowMatchingHeadConfig& config,
                   std::shared_ptr<head_detail::AdaLnMlpNet> net);

  FlowMatchingHeadConfig config_;
  std::shared_ptr<head_detail::AdaLnMlpNet> net_;
};  ///< A flow-matching head: an AdaLN MLP predicting the velocity from noise to token vectors.

}  // namespace tessera
