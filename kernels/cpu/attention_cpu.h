#pragma once
// The tiled CPU attention kernels (internal to the library; users call tessera::attention).
// Inputs are validated by the caller (check_attention_inputs). q, k, v [B, H, L, D], float32 or
// bfloat16; accumulation in float32. The backward pass copies its inputs to contiguous tensors;
// the forward pass takes any batch and head strides (Note [Strided heads]).
//
// Note [Strided heads]
// Decoding against a KV cache (Note [Decoding against a KV cache]) attends to slots [0, length) of
// [B, H, capacity, D] buffers: a view whose rows are contiguous within each (batch, head) but whose
// heads are capacity·D apart. Copying that view to a contiguous tensor costs the whole cache, at
// every layer of every step, and most of it on freshly faulted pages: raster sampling spent more
// time there than in attention itself. The forward kernel therefore reads each (batch, head)'s
// rows from its own offset, b·stride(0) + h·stride(1), and needs only stride(3) = 1 and
// stride(2) = D (or a single row); other layouts are copied first (with_contiguous_rows).

#include <ATen/core/Tensor.h>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"

namespace tessera::cpu {

namespace detail {
/// t itself when its rows are contiguous (stride(3) = 1, stride(2) = D or one row), else a
/// contiguous copy: the layouts the forward kernel reads in place (Note [Strided heads]).
at::Tensor with_contiguous_rows(const at::Tensor& t);
}  // namespace detail

AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, double scale);

// Recomputes the probabilities from lse; grad_out [B, H, Lq, D]. Gradients in the inputs' dtype.
AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, double scale);

}  // namespace tessera::cpu
