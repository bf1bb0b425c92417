#pragma once
// The optimizer interface the Trainer drives, and the configuration that picks one.
//
// Note [Optimizers on raw tensors]
// Tessera's optimizers update plain tensors, keyed by the parameter's name, instead of using
// torch::optim. Every piece of state (moments, step counts) is then a named tensor that goes into
// a safetensors checkpoint as "<parameter>.<state>" and comes back by name, so a resumed run
// continues bit-identically and a checkpoint can be read by any tool. The update formulas are
// written out op by op in the same order as PyTorch's single-tensor reference implementations
// (torch.optim.AdamW, and lucidrains' / Google's Lion), so float32 results agree with them.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "tessera/core/config.h"

namespace tessera {
/// Which optimizer make_optimizer builds.
enum class OptimizerKind { adamw, lion };

template <>
struct ConfigEnum<OptimizerKind> {  /// Each value with its name.
  static constexpr std::pair<OptimizerKind, const char*> values[] = {
      {OptimizerKind::adamw, "adamw"}, {OptimizerKind::lion, "lion"}};
};  ///< The names of OptimizerKind values in JSON configs.

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::adamw;  ///< adamw or lion
  /// The peak learning rate; the schedule scales it per step (see lr_schedule.h).
  double learning_rate = 1e-3;
  /// Unset: the optimizer's own defaults (AdamW 0.9 / 0.999 as torch.optim.AdamW; Lion 0.9 / 0.99
  /// as Chen et al. 2023).
  std::optional<double> beta1{};
  std::optional<double> beta2{};  ///< see beta1
  double eps = 1e-8;  ///< AdamW only
  /// Decoupled weight decay λ: θ ← θ − lr·λ·θ before the update (AdamW and Lion alike).
  double weight_decay = 0.01;
  /// Biases and normalisation gains (parameters with at most one dimension) get no weight decay,
  /// the usual practice (decay pulls a LayerNorm gain towards 0, which is not regularisation).
  bool no_weight_decay_1d = true;

  template <class Visitor>
  void visit(Visitor& v) {
    v("kind", kind);
    v("learning_rate", learning_rate);
    v("beta1", beta1);
    v("beta2", beta2);
    v("eps", eps);
    v("weight_decay", weight_decay);
    v("no_weight_decay_1d", no_weight_decay_1d);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
  double beta1_or_default() const;  ///< beta1, or the optimizer's default.
  double beta2_or_default() const;  ///< beta2, or the optimizer's default.
};  ///< An optimizer's kind and hyperparameters.

/// Updates named parameters in place from their .grad(). Parameters without a gradient are skipped
/// (their state does not advance), as in torch.optim.
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  /// One update of every parameter with a gradient, at learning rate `lr` (the schedule's value for
  /// this step). Runs without autograd. `parameters` must be the same names on every call.
  virtual void step(const std::map<std::string, at::Tensor>& parameters, double lr) = 0;

  /// The state as named tensors ("<parameter>.exp_avg", "<parameter>.step", ...), sharing storage
  /// with the optimizer: clone before modifying.
  virtual std::map<std::string, at::Tensor> state_dict() const = 0;
  /// Replaces the state; throws tessera::Error for an unknown key or a tensor of the wrong shape.
  /// Tensors are copied (onto the device of `parameters`).
  virtual void load_state_dict(const std::map<std::string, at::Tensor>& state,
                               const std::map<std::string, at::Tensor>& parameters) = 0;

  virtual const OptimizerConfig& config() const = 0;  ///< The configuration it was built from.
  /// The weight decay applied to a parameter of this name and shape.
  double weight_decay_for(const at::Tensor& parameter) const;
};

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config);  ///< Of config.kind.

}  // namespace tessera
