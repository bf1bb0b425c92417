#include "tessera/train/gradient_clipping.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

namespace tessera {

double global_grad_norm(const std::vector<at::Tensor>& parameters) {
  at::NoGradGuard no_grad;
  double squared = 0;
  for (const auto& p : parameters) {
    const at::Tensor& g = p.grad();
    if (g.defined()) squared += g.to(at::kDouble).square().sum().item<double>();
  }
  return std::sqrt(squared);
}

double clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm) {
  const double norm = global_grad_norm(parameters);
  if (max_norm <= 0 || !std::isfinite(norm) || norm <= max_norm) return norm;
  // torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6).
  const double scale = max_norm / (norm + 1e-6);
  at::NoGradGuard no_grad;
  for (const auto& p : parameters) {
    if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

double clip_grad_norm(const std::map<std::string, at::Tensor>& parameters, double max_norm) {
  std::vector<at::Tensor> list;
  list.reserve(parameters.size());
  for (const auto& [name, p] : parameters) list.push_back(p);
  return clip_grad_norm(list, max_norm);
}

}  // namespace tessera
