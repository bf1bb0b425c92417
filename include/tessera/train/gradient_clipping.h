#pragma once
// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_ with norm_type 2): the one
// clipping function; the Trainer calls it for every model it trains.
//
// Note [Why not torch::nn::utils::clip_grad_norm_]
// LibTorch's C++ clip_grad_norm_ (torch/nn/utils/clip_grad.h) takes each gradient's norm in its
// own dtype (float32), stacks the norms and takes their norm in float32, and multiplies every
// gradient by a float32 tensor factor. This one accumulates the squares in float64 and multiplies
// by the float64 factor max_norm / (norm + 1e-6). The factor is the same formula, but the floats
// are not: on random float32 gradients of a few shapes the clipped gradients differed in the last
// bits in 148 of 200 trials, so switching would change the results of every generator training
// that clips (every config in configs/generator/ clips at 1.0).
// The float64 norm is also the reference the tests check against, and it is nearly independent of
// the reduction order (thread count). Besides, max_norm <= 0 must only measure the norm (the
// metrics' grad_norm), which clip_grad_norm_ cannot do without zeroing the gradients, and a
// non-finite norm leaves the gradients alone instead of filling them with NaN.

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
