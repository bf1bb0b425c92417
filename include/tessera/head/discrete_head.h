#pragma once
// A softmax over a codebook: hidden → logits over V tokens (linear, or VAR's AdaLN-before-head),
// cross-entropy with optional label smoothing, and sampling with guidance, temperature, top-k,
// top-p and an optional Gumbel-max draw (see Note [Token distribution] in token_sampling.h).
//
// Parameter names: linear — `head.weight`, `head.bias`; adaln — also `head_nm.ada_lin.1.weight`,
// `head_nm.ada_lin.1.bias` (VAR's names; LlamaGen's `output.weight` is `head.weight` with
// bias = false).

#include <ATen/core/Tensor.h>

#include <memory>

#include "tessera/head/head.h"

namespace tessera {

namespace head_detail {
class DiscreteProjectionNet;
}

class DiscreteHead final : public Head {
 public:
  /// Fresh parameters: weights N(0, 0.02²) drawn from a generator seeded with `seed`, biases 0.
  explicit DiscreteHead(const DiscreteHeadConfig& config, uint64_t seed = 0);
  ~DiscreteHead() override;

  const DiscreteHeadConfig& discrete_config() const { return config_; }  ///< Its configuration.

  /// [N, V] logits, differentiable. `condition` [N, condition_width] is required by the adaln
  /// projection and must be undefined for the linear one.
  at::Tensor logits(const at::Tensor& hidden, const at::Tensor& condition = {});

  /// The distribution sample() draws from, for every row: float [N, V] (N = rows / 2 under
  /// guidance). Runs without autograd.
  at::Tensor distribution(const at::Tensor& hidden, const Guidance& guidance,
                          const HeadSamplingOptions& options, const HeadStep& step = {});

  // --- Head ---
  HeadConfig config() const override;
  int64_t hidden_width() const override { return config_.width; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t token_channels() const override { return 0; }
  /// Cross-entropy (with the configured label smoothing) of int64 [N] targets; weighted mean.
  HeadLoss loss(const at::Tensor& hidden, const at::Tensor& targets,
                const HeadLossOptions& options = {}) override;
 protected:
  HeadSample sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                         const HeadSamplingOptions& options, SampleRngs& rngs,
                         const HeadStep& step) override;

 private:
  DiscreteHead(const DiscreteHeadConfig& config,
               std::shared_ptr<head_detail::DiscreteProjectionNet> net);
  // distribution() for options already validated (sample_impl's path).
  at::Tensor checked_distribution(const at::Tensor& hidden, const Guidance& guidance,
                                  const HeadSamplingOptions& options, const HeadStep& step);

  DiscreteHeadConfig config_;
  std::shared_ptr<head_detail::DiscreteProjectionNet> net_;
};  ///< A projection to V logits: cross-entropy in training, guided token draws in sampling.

}  // namespace tessera
