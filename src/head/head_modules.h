#pragma once
// The torch::nn modules behind the heads (private to src/head), behind two small wrappers so that
// only head_modules.cpp (and head.cpp, for the generic module plumbing) include torch/nn headers,
// which are slow to compile.
//
// Note [Head module paths]
// Modules are registered under the reference implementations' names so that named_parameters()
// yields their state-dict keys: MAR's SimpleMLPAdaLN (models/diffloss.py) under "net", where
// nn.Sequential children are numbered ("mlp.0", "mlp.2": index 1 is the parameterless SiLU;
// "adaLN_modulation.1": index 0 is the SiLU), and VAR's head ("head", and "head_nm.ada_lin.1"
// for AdaLNBeforeHead, whose LayerNorm has no affine parameters).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "tessera/head/head_config.h"

namespace torch::nn {
class Module;
}

namespace tessera::head_detail {

// hidden [N, width] (+ condition [N, condition_width] for adaln) → logits [N, V].
class DiscreteProjectionNet {
 public:
  DiscreteProjectionNet(const DiscreteHeadConfig& config, uint64_t seed);
  ~DiscreteProjectionNet();
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& condition) const;
  std::shared_ptr<torch::nn::Module> root() const;

 private:
  struct Modules;
  std::shared_ptr<Modules> modules_;
};

// MAR's SimpleMLPAdaLN: (x [N, C], t [N], z [N, hidden_width]) → [N, out_channels], registered
// under "net" of the root module.
class AdaLnMlpNet {
 public:
  AdaLnMlpNet(const AdaLnMlpConfig& config, int64_t out_channels, uint64_t seed);
  ~AdaLnMlpNet();
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& z) const;
  // MAR's forward_with_cfg: x [R, C] at times t [R] evaluated against both halves of
  // z_pair = [z_c; z_u] ([2R, hidden_width]) in one batched call; returns [R, out_channels] whose
  // first `guided_channels` columns are u + w·(c − u) and the rest the conditional half's.
  at::Tensor forward_guided(const at::Tensor& x, const at::Tensor& t, const at::Tensor& z_pair,
                            double weight, int64_t guided_channels) const;
  // The two terms of the blocks' condition y = time_embed(t) + cond_embed(z), separately, for a
  // sampling loop that evaluates the net at many timesteps against the same z: cond_embed(z)
  // [N, width] once per loop, time_embed(t) [N, width] per step (Note [Sampling with a fixed
  // condition] in diffusion_head.cpp). Then forward and forward_guided given y [N or 2N, width].
  at::Tensor embed_condition(const at::Tensor& z) const;
  at::Tensor embed_timesteps(const at::Tensor& t) const;
  at::Tensor forward_embedded(const at::Tensor& x, const at::Tensor& y) const;
  at::Tensor forward_guided_embedded(const at::Tensor& x, const at::Tensor& y_pair, double weight,
                                     int64_t guided_channels) const;
  std::shared_ptr<torch::nn::Module> root() const;

 private:
  struct Modules;
  std::shared_ptr<Modules> modules_;
};

// GLIDE/DiT sinusoidal features of (possibly fractional) timesteps t [N]: [cos(t·f), sin(t·f)]
// with f_j = exp(−ln(10000)·j/(dim/2)), j < dim/2, and a zero column when dim is odd. float32.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim);

}  // namespace tessera::head_detail
