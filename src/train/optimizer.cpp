#include "tessera/train/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/train/adamw.h"
#include "tessera/train/lion.h"

namespace tessera {

void OptimizerConfig::validate() const {
  TESSERA_CHECK(learning_rate > 0 && std::isfinite(learning_rate),
                "optimizer.learning_rate must be positive and finite, got {}", learning_rate);
  const double b1 = beta1_or_default(), b2 = beta2_or_default();
  TESSERA_CHECK(b1 >= 0 && b1 < 1, "optimizer.beta1 must be in [0, 1), got {}", b1);
  TESSERA_CHECK(b2 >= 0 && b2 < 1, "optimizer.beta2 must be in [0, 1), got {}", b2);
  TESSERA_CHECK(eps > 0, "optimizer.eps must be positive, got {}", eps);
  TESSERA_CHECK(weight_decay >= 0, "optimizer.weight_decay must be >= 0, got {}", weight_decay);
}

double OptimizerConfig::beta1_or_default() const { return beta1.value_or(0.9); }

double OptimizerConfig::beta2_or_default() const {
  return beta2.value_or(kind == OptimizerKind::lion ? 0.99 : 0.999);
}

double Optimizer::weight_decay_for(const at::Tensor& parameter) const {
  if (config().no_weight_decay_1d && parameter.dim() <= 1) return 0.0;
  return config().weight_decay;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config) {
  switch (config.kind) {
    case OptimizerKind::adamw:
      return std::make_unique<AdamW>(config);
    case OptimizerKind::lion:
      return std::make_unique<Lion>(config);
  }
  TESSERA_FAIL("make_optimizer: unknown optimizer kind {}", static_cast<int>(config.kind));
}

namespace {

// Splits "<parameter>.<suffix>" at the last dot, checks the suffix is one of `suffixes` and the
// parameter exists.
std::pair<std::string, std::string> split_state_key(
    const std::string& key, const std::set<std::string>& suffixes,
    const std::map<std::string, at::Tensor>& parameters, const char* what) {
  const auto dot = key.rfind('.');
  TESSERA_CHECK(dot != std::string::npos && suffixes.contains(key.substr(dot + 1)),
                "{} state: unexpected key '{}' (expected '<parameter>.<state>')", what, key);
  std::string name = key.substr(0, dot), suffix = key.substr(dot + 1);
  TESSERA_CHECK(parameters.contains(name),
                "{} state: key '{}' names parameter '{}', which the model does not have", what,
                key, name);
  return {std::move(name), std::move(suffix)};
}

at::Tensor copy_state(const at::Tensor& source, const at::Tensor& parameter,
                      const std::string& key, const char* what) {
  TESSERA_CHECK(source.sizes() == parameter.sizes(),
                "{} state: '{}' has shape {}, the parameter has {}", what, key, source.sizes(),
                parameter.sizes());
  return source.to(parameter.device(), parameter.scalar_type(), /*non_blocking=*/false,
                   /*copy=*/true)
      .contiguous();
}

}  // namespace

// --- AdamW ---------------------------------------------------------------------------------------

AdamW::AdamW(OptimizerConfig config) : config_(std::move(config)) {
  TESSERA_CHECK(config_.kind == OptimizerKind::adamw, "AdamW: config.kind must be adamw");
  config_.validate();
}

void AdamW::step(const std::map<std::string, at::Tensor>& parameters, double lr) {
  TESSERA_CHECK(lr >= 0 && std::isfinite(lr), "AdamW::step: lr must be >= 0 and finite, got {}",
                lr);
  at::NoGradGuard no_grad;
  const double beta1 = config_.beta1_or_default(), beta2 = config_.beta2_or_default();
  for (const auto& [name, param] : parameters) {
    const at::Tensor grad = param.grad();
    if (!grad.defined()) continue;
    auto it = state_.find(name);
    if (it == state_.end()) {
      // torch keeps `step` as a float32 scalar tensor; a float64 one counts exactly far longer.
      it = state_
               .emplace(name, State{at::zeros_like(param, at::MemoryFormat::Preserve),
                                    at::zeros_like(param, at::MemoryFormat::Preserve),
                                    at::zeros({}, at::TensorOptions().dtype(at::kDouble))})
               .first;
    }
    State& s = it->second;
    s.step.add_(1);
    const double t = s.step.item<double>();
    // Same operations, same order as torch.optim.adamw's _single_tensor_adamw.
    const double decay = weight_decay_for(param);
    if (decay != 0) param.mul_(1 - lr * decay);
    s.exp_avg.lerp_(grad, 1 - beta1);
    s.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    const double bias_correction1 = 1 - std::pow(beta1, t);
    const double bias_correction2 = 1 - std::pow(beta2, t);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    const at::Tensor denom = (s.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(config_.eps);
    param.addcdiv_(s.exp_avg, denom, -step_size);
  }
}

std::map<std::string, at::Tensor> AdamW::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, s] : state_) {
    out[name + ".exp_avg"] = s.exp_avg;
    out[name + ".exp_avg_sq"] = s.exp_avg_sq;
    out[name + ".step"] = s.step;
  }
  return out;
}

void AdamW::load_state_dict(const std::map<std::string, at::Tensor>& state,
                            const std::map<std::string, at::Tensor>& parameters) {
  std::map<std::string, State> loaded;
  for (const auto& [key, tensor] : state) {
    const auto [name, suffix] =
        split_state_key(key, {"exp_avg", "exp_avg_sq", "step"}, parameters, "AdamW");
    const at::Tensor& param = parameters.at(name);
    State& s = loaded[name];
    if (suffix == "step") {
      TESSERA_CHECK(tensor.numel() == 1, "AdamW state: '{}' must be a scalar, got shape {}", key,
                    tensor.sizes());
      s.step = tensor.to(at::kDouble).reshape({}).clone();
    } else {
      (suffix == "exp_avg" ? s.exp_avg : s.exp_avg_sq) = copy_state(tensor, param, key, "AdamW");
    }
  }
  for (const auto& [name, s] : loaded) {
    TESSERA_CHECK(s.exp_avg.defined() && s.exp_avg_sq.defined() && s.step.defined(),
                  "AdamW state: parameter '{}' lacks one of exp_avg, exp_avg_sq, step", name);
  }
  state_ = std::move(loaded);
}

// --- Lion ----------------------------------------------------------------------------------------

Lion::Lion(OptimizerConfig config) : config_(std::move(config)) {
  TESSERA_CHECK(config_.kind == OptimizerKind::lion, "Lion: config.kind must be lion");
  config_.validate();
}

void Lion::step(const std::map<std::string, at::Tensor>& parameters, double lr) {
  TESSERA_CHECK(lr >= 0 && std::isfinite(lr), "Lion::step: lr must be >= 0 and finite, got {}",
                lr);
  at::NoGradGuard no_grad;
  const double beta1 = config_.beta1_or_default(), beta2 = config_.beta2_or_default();
  for (const auto& [name, param] : parameters) {
    const at::Tensor grad = param.grad();
    if (!grad.defined()) continue;
    auto it = exp_avg_.find(name);
    if (it == exp_avg_.end()) {
      it = exp_avg_.emplace(name, at::zeros_like(param, at::MemoryFormat::Preserve)).first;
    }
    at::Tensor& m = it->second;
    const double decay = weight_decay_for(param);
    if (decay != 0) param.mul_(1 - lr * decay);
    const at::Tensor update = m * beta1 + grad * (1 - beta1);
    param.add_(update.sign(), -lr);
    m.mul_(beta2).add_(grad, 1 - beta2);
  }
}

std::map<std::string, at::Tensor> Lion::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, m] : exp_avg_) out[name + ".exp_avg"] = m;
  return out;
}

void Lion::load_state_dict(const std::map<std::string, at::Tensor>& state,
                           const std::map<std::string, at::Tensor>& parameters) {
  std::map<std::string, at::Tensor> loaded;
  for (const auto& [key, tensor] : state) {
    const auto [name, suffix] = split_state_key(key, {"exp_avg"}, parameters, "Lion");
    loaded[name] = copy_state(tensor, parameters.at(name), key, "Lion");
  }
  exp_avg_ = std::move(loaded);
}

}  // namespace tessera
