#pragma once
// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2), per
// parameter:
//
//   u ← sign(β1·m + (1 − β1)·g)
//   θ ← θ − lr·(u + λ·θ)            (decoupled weight decay, applied as θ·(1 − lr·λ) first)
//   m ← β2·m + (1 − β2)·g
//
// Defaults β1 = 0.9, β2 = 0.99. Lion's update has unit magnitude per coordinate, so its learning
// rate is usually 3–10x smaller than AdamW's and its weight decay 3–10x larger (the paper's
// advice). sign(0) = 0, as torch.sign. State per parameter: "<name>.exp_avg" (m).

#include "tessera/train/optimizer.h"

namespace tessera {

class Lion final : public Optimizer {
 public:
  explicit Lion(OptimizerConfig config);  ///< config.kind must be lion.

  void step(const std::map<std::string, at::Tensor>& parameters, double lr) override;
  std::map<std::string, at::Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, at::Tensor>& state,
                       const std::map<std::string, at::Tensor>& parameters) override;
  const OptimizerConfig& config() const override { return config_; }

 private:
  OptimizerConfig config_;
  std::map<std::string, at::Tensor> exp_avg_;
};  ///< Lion (Chen et al. 2023): sign updates from an interpolated momentum.

}  // namespace tessera
