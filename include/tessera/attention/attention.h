#pragma once
// tessera::attention: scaled dot-product attention under a BlockMask, differentiable.
//
// Shapes: q [B, H, Lq, D], k and v [B, H, Lk, D], same dtype (CPU: float32, bfloat16; CUDA: bf16,
// fp16; float64: the reference) and device; the mask is for Lq x Lk. Returns q's shape and dtype.
// A query row that sees no key gets output 0 (and log-sum-exp -inf), never NaN; its gradient is 0.

#include <ATen/core/Tensor.h>

#include <optional>

#include "tessera/attention/block_mask.h"

namespace tessera {
/// Which implementation tessera::attention runs.
enum class AttentionBackend {
  automatic,  ///< CPU tensors: the CPU kernel (float64: the reference); CUDA: the CUDA kernel for
              ///< bf16/fp16 with D 64 or 128, else the reference. See Note [Automatic backend].
  cpu,        ///< the tiled CPU kernel
  cuda,       ///< the CUDA kernel: bf16/fp16, D 64 or 128 (else, or not built, an error)
  reference,  ///< dense masked math: fallback and debugging; fp64 capable
};

const char* to_string(AttentionBackend backend);  ///< The enumerator's name, e.g. "cpu".

struct AttentionOptions {
  std::optional<double> scale;  ///< softmax scale; default 1/sqrt(D)
  AttentionBackend backend = AttentionBackend::automatic;  ///< which kernel runs
};  ///< Options of tessera::attention beyond its tensors and mask.

/// Differentiable: gradients flow to q, k and v through the same backend's backward kernel.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const BlockMask& mask, const AttentionOptions& options = {});

/// Head dimensions the CPU kernel accepts (the CUDA kernel: 64 and 128, docs/cuda.md).
constexpr int64_t kMinHeadDim = 32;
constexpr int64_t kMaxHeadDim = 256;  ///< The largest head dimension the CPU kernel accepts.

/// Validates shapes, dtypes, devices and the mask's lengths against q/k/v; throws tessera::Error
/// naming what is wrong. `backend` decides which head dims and dtypes are acceptable.
void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const BlockMask& mask, AttentionBackend backend);

/// The forward pass's results: out [B, H, Lq, D] in q's dtype, lse [B, H, Lq] float32 (natural
/// log of the softmax denominator of the scaled scores; -inf for a row with no visible key).
struct AttentionForward {
  at::Tensor out;  ///< [B, H, Lq, D] in q's dtype
  at::Tensor lse;  ///< [B, H, Lq] float32 log-sum-exp; -inf for a row with no key
};

struct AttentionGradients {  /// dL/dq, dL/dk and dL/dv. @{
  at::Tensor dq, dk, dv;  /** @} */
};  ///< Gradients of the loss with respect to q, k and v, shaped as they are.

/// Dense masked attention in q's dtype (use float64 inputs for a float64 reference). Non-
/// differentiable through this path: tests call it to get the expected values.
AttentionForward attention_reference(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const BlockMask& mask, double scale);

}  // namespace tessera
