#pragma once
// The ATen adapters of the attention kernels (internal to the library; users call
// tessera::attention): each turns at::Tensor + BlockMask into its kernels' torch-free params struct
// (kernels/cpu/attention_kernels.h, kernels/cuda/attention_kernels.h), allocates the outputs and
// launches. Inputs are validated by the caller (check_attention_inputs); the adapters check only
// what their kernels would otherwise misread.
//   cpu_backend.cpp:  q, k, v [B, H, L, D], float32 or bfloat16. The forward pass takes any batch
//                     and head strides (Note [Strided heads] in kernels/cpu/attention_kernels.h);
//                     the backward pass copies its inputs to contiguous tensors.
//   cuda_backend.cpp: built with TESSERA_WITH_CUDA; q, k, v on one CUDA device, bfloat16 or
//                     float16, head dim 64 or 128.
// Included by tests through a relative path, so its own includes are relative or public.

#include <ATen/core/Tensor.h>

#include "../../../kernels/cpu/attention_kernels.h"
#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"

namespace tessera {

namespace cpu {

/// t itself when its rows are contiguous (stride(3) = 1, stride(2) = D or one row), else a
/// contiguous copy: the layouts the forward kernel reads in place (Note [Strided heads]).
at::Tensor with_contiguous_rows(const at::Tensor& t);

/// The CPU forward pass; `tiles` other than the default only to exercise the tiling in tests.
AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, double scale,
                                   const TileSizes& tiles = kForwardTiles);

/// The CPU backward pass: recomputes the probabilities from lse; grad_out [B, H, Lq, D].
/// Gradients in the inputs' dtype.
AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, double scale,
                                      const TileSizes& tiles = kBackwardTiles);

}  // namespace cpu

#ifdef TESSERA_WITH_CUDA
namespace cuda {

/// Whether the CUDA kernels take tensors of this dtype and head dim (device not considered).
bool kernel_supports(at::ScalarType dtype, int64_t head_dim);

/// The CUDA forward pass on the current stream of q's device.
AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, double scale);

/// The CUDA backward pass: recomputes the probabilities from lse; grad_out [B, H, Lq, D].
/// Gradients in the inputs' dtype.
AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, double scale);

}  // namespace cuda
#endif

}  // namespace tessera
