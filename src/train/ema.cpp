#include "tessera/train/ema.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

void EmaConfig::validate() const {
  TESSERA_CHECK(decay >= 0 && decay < 1, "ema.decay must be in [0, 1), got {}", decay);
}

ExponentialMovingAverage::ExponentialMovingAverage(
    const std::map<std::string, at::Tensor>& parameters, EmaConfig config)
    : config_(config) {
  config_.validate();
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : parameters) averages_[name] = p.detach().clone();
}

double ExponentialMovingAverage::decay_at(int64_t updates) const {
  if (!config_.warmup) return config_.decay;
  const double t = static_cast<double>(updates);
  return std::min(config_.decay, (1.0 + t) / (10.0 + t));
}

void ExponentialMovingAverage::update(const std::map<std::string, at::Tensor>& parameters) {
  TESSERA_CHECK(parameters.size() == averages_.size(),
                "EMA update: got {} parameters, the average holds {}", parameters.size(),
                averages_.size());
  at::NoGradGuard no_grad;
  const double d = decay_at(updates_);
  for (const auto& [name, p] : parameters) {
    auto it = averages_.find(name);
    TESSERA_CHECK(it != averages_.end(), "EMA update: unknown parameter '{}'", name);
    // ema ← d·ema + (1 − d)·θ, written as a lerp towards θ (one pass, as timm's ModelEmaV3).
    it->second.lerp_(p.detach(), 1.0 - d);
  }
  ++updates_;
}

void ExponentialMovingAverage::load(const std::map<std::string, at::Tensor>& averages,
                                    int64_t updates) {
  TESSERA_CHECK(updates >= 0, "EMA load: update count must be >= 0, got {}", updates);
  for (const auto& [name, average] : averages_) {
    auto it = averages.find(name);
    TESSERA_CHECK(it != averages.end(), "EMA load: missing average for parameter '{}'", name);
    TESSERA_CHECK(it->second.sizes() == average.sizes(),
                  "EMA load: '{}' has shape {}, the parameter has {}", name, it->second.sizes(),
                  average.sizes());
  }
  for (const auto& [name, tensor] : averages) {
    TESSERA_CHECK(averages_.contains(name), "EMA load: unexpected parameter '{}'", name);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, average] : averages_) average.copy_(averages.at(name));
  updates_ = updates;
}

}  // namespace tessera
