#pragma once
// The CUDA attention kernels behind ATen (internal to the library; users call tessera::attention).
// Compiled only when the library is built with CUDA (TESSERA_WITH_CUDA). Inputs are validated by
// the caller (check_attention_inputs): q, k, v on one CUDA device, bfloat16 or float16, head dim
// 64 or 128.

#include <ATen/core/Tensor.h>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"

namespace tessera::cuda {

// Whether the CUDA kernels take tensors of this dtype and head dim (device not considered).
bool kernel_supports(at::ScalarType dtype, int64_t head_dim);

AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, double scale);

// Recomputes the probabilities from lse; grad_out [B, H, Lq, D]. Gradients in the inputs' dtype.
AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, double scale);

}  // namespace tessera::cuda
