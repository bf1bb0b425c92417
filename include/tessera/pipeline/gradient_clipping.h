#pragma once
// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_ with norm_type 2).

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace tessera {

/// The L2 norm of all gradients together (accumulated in float64); parameters without a gradient
/// are skipped. Non-finite when any gradient is.
double global_grad_norm(const std::vector<at::Tensor>& parameters);

/// Scales every gradient by max_norm / (norm + 1e-6) when the global norm exceeds max_norm (the
/// same factor as torch's clip_grad_norm_), and returns the norm before clipping. max_norm <= 0
/// only measures. A non-finite norm leaves the gradients alone (the trainer stops on it).
double clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm);
double clip_grad_norm(const std::map<std::string, at::Tensor>& parameters, double max_norm);
///< The same, over named parameters.
}  // namespace tessera
