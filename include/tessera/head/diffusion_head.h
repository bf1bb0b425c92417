#pragma once
// MAR's diffusion loss as a head (LTH14/mar models/diffloss.py): a per-token MLP of AdaLN
// residual blocks, conditioned on the backbone vector z and the diffusion timestep, predicts the
// noise ε (and, optionally, where the variance lies between the posterior's and β).
//
// Training: t uniform in [0, training_steps), x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, loss = mean over
// channels of (ε − ε̂)², plus IDDPM's variational-bound term (in bits, through the variance output
// only) when the variance is learned; every row is repeated batch_multiplier times with fresh
// (t, ε).
// Sampling: the process respaced to options.diffusion.steps (or the annealed count), all tokens of
// the call denoised together, one batched MLP call per step (two halves in it under guidance).
//   ddpm  x ← μ(x, ε̂) + σ·temperature·n (no noise on the last step); σ from the learned range, or
//         "fixed large" without a learned variance.
//   ddim  x ← √ᾱ'·x̂_0 + √(1 − ᾱ' − σ²)·ε̂ + σ·temperature·n, σ = η·√((1−ᾱ')/(1−ᾱ))·√(1−ᾱ/ᾱ').
// The initial noise is not scaled by the temperature (MAR). Guidance combines ε (Note [Guidance
// batch layout]); the variance output is the conditional half's (as MAR's forward_with_cfg, which
// keeps the conditional half).
//
// Note [Clipping x̂_0]
// Every step estimates x̂_0 = x/√ᾱ − ε̂·√(1/ᾱ − 1). With the cosine schedule the first sampling
// step is at t = 999, where β is clipped to 0.999 and ᾱ ≈ 1e-8, so √(1/ᾱ) ≈ 1e4: an error δ in ε̂
// becomes 1e4·δ in x̂_0 and about 1e3·δ in the posterior mean. MAR samples without clipping and
// relies on its large, long-trained heads predicting ε there almost exactly (ε̂ ≈ x_t to 1e-4); a
// small head does not: the shipped Fashion-MNIST MAR head (width 128, 1,500 steps) draws tokens
// hundreds of times wider than the data's unit deviation (the test
// DiffusionHeadOnShippedMar.UnclippedSamplesBlowUpAtLowSnr measures it), and the decoded images
// were saturated blobs. Clamping x̂_0 to the tokens' range
// (options.diffusion.clip_x_start, IDDPM's clip_denoised with a range) removes the blow-up; the
// later steps, at SNRs the head has learnt, do the rest. It is off by default (MAR's behaviour).
//
// Note [Reference seeding of the diffusion loop]
// With a shared stream (SampleRngs::shared_stream: the reference's one generator) the loop draws
// what MAR's p_sample_loop draws from torch's default generator: x_T for the conditional rows,
// then one torch.randn_like(x) per step over every row x has, i.e. over both halves of a guided
// batch (MAR's DiffLoss denoises the unconditional half alongside and discards it; Tessera keeps
// the conditional half's numbers), the last step included, where MAR multiplies the noise by 0.
// Per-sample generators skip those unused draws.
//
// Parameter names are MAR's DiffLoss's (`net.time_embed.mlp.0.weight`, `net.cond_embed.weight`,
// `net.input_proj.weight`, `net.res_blocks.<i>.{in_ln,mlp.0,mlp.2,adaLN_modulation.1}.*`,
// `net.final_layer.{linear,adaLN_modulation.1}.*`): a MAR checkpoint's `diffloss.` entries load
// once that prefix is removed.

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <mutex>

#include "tessera/head/gaussian_diffusion.h"
#include "tessera/head/head.h"

namespace tessera {

namespace head_detail {
class AdaLnMlpNet;
}

class DiffusionHead final : public Head {
 public:
  /// Fresh parameters, initialised as MAR's (Xavier-uniform linears with zero biases, N(0, 0.02²)
  /// time-embedding weights, zero AdaLN modulations and output layer), from `seed`.
  explicit DiffusionHead(const DiffusionHeadConfig& config, uint64_t seed = 0);
  ~DiffusionHead() override;

  const DiffusionHeadConfig& diffusion_config() const { return config_; }  ///< Its configuration.

  /// The MLP's raw output [N, C or 2C] for noisy tokens x [N, C], training timesteps t [N] (float)
  /// and backbone vectors z [N, hidden_width]; differentiable.
  at::Tensor predict(const at::Tensor& x, const at::Tensor& t, const at::Tensor& z);

  /// The sampling loop from a given initial noise x_T [N, C] for the N conditional rows of
  /// `hidden` (what sample() runs after drawing x_T itself; IDDPM's p_sample_loop with `noise`
  /// given), the per-step noise drawn from `rngs` as sample() draws it; returns the tokens
  /// [N, C]. Validates `guidance` and `options` as Head::sample does.
  at::Tensor denoise(const at::Tensor& x_T, const at::Tensor& hidden, const Guidance& guidance,
                     const HeadSamplingOptions& options, SampleRngs& rngs,
                     const HeadStep& step = {});

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
  DiffusionHead(const DiffusionHeadConfig& config, std::shared_ptr<head_detail::AdaLnMlpNet> net);
  // sample_impl (x_T undefined: drawn from rngs) and denoise.
  at::Tensor run_sampler(const at::Tensor& x_T, const at::Tensor& hidden, const Guidance& guidance,
                         const HeadSamplingOptions& options, SampleRngs& rngs,
                         const HeadStep& step);
  // The respaced process with `count` steps, built on first use.
  const GaussianDiffusion& sampling_process(int64_t count);

  // The training process's tables the loss gathers per row, as float32 CPU tensors (the reference
  // extracts its float64 tables with `.float()`), built once.
  struct TrainingTables {
    at::Tensor sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod,
        sqrt_recipm1_alphas_cumprod, posterior_mean_coef1, posterior_mean_coef2,
        posterior_log_variance_clipped, log_betas;
  };

  DiffusionHeadConfig config_;
  std::shared_ptr<head_detail::AdaLnMlpNet> net_;
  GaussianDiffusion training_process_;
  TrainingTables training_tables_;
  std::mutex processes_mutex_;
  std::map<int64_t, GaussianDiffusion> sampling_processes_;
};  ///< MAR's diffusion loss head: an AdaLN MLP that denoises token vectors given the backbone's.

}  // namespace tessera
