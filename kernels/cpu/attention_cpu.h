#pragma once
// The tiled CPU attention kernels (internal to the library; users call tessera::attention).
// Inputs are validated by the caller (check_attention_inputs). q, k, v contiguous [B, H, L, D],
// float32 or bfloat16; accumulation in float32.

#include <ATen/core/Tensor.h>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"

namespace tessera::cpu {

AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, double scale);

// Recomputes the probabilities from lse; grad_out [B, H, Lq, D]. Gradients in the inputs' dtype.
AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, double scale);

}  // namespace tessera::cpu
