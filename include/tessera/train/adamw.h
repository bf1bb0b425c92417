#pragma once
// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), exactly as
// torch.optim.AdamW (amsgrad off, maximize off), per parameter:
//
//   t ← t + 1
//   θ ← θ·(1 − lr·λ)
//   m ← m + (g − m)·(1 − β1)                      (lerp, = β1·m + (1−β1)·g)
//   v ← β2·v + (1 − β2)·g²
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//
// State per parameter: "<name>.exp_avg" (m), "<name>.exp_avg_sq" (v), "<name>.step" (t, a float64
// scalar as torch keeps it). See Note [Optimizers on raw tensors] in optimizer.h.

#include "tessera/train/optimizer.h"

namespace tessera {

class AdamW final : public Optimizer {
 public:
  explicit AdamW(OptimizerConfig config);  ///< config.kind must be adamw.

  void step(const std::map<std::string, at::Tensor>& parameters, double lr) override;
  std::map<std::string, at::Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, at::Tensor>& state,
                       const std::map<std::string, at::Tensor>& parameters) override;
  const OptimizerConfig& config() const override { return config_; }

 private:
  struct State {
    at::Tensor exp_avg, exp_avg_sq, step;
  };
  OptimizerConfig config_;
  std::map<std::string, State> state_;
};  ///< AdamW (torch.optim.AdamW's update, decoupled weight decay).

}  // namespace tessera
