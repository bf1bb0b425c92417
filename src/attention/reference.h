#pragma once
// The dense reference's backward pass (internal): the closed-form softmax-attention gradient,
// evaluated densely in the inputs' dtype. Used by the reference backend of tessera::attention.

#include <ATen/core/Tensor.h>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"

namespace tessera::detail {

// q [B, H, Lq, D], k and v [B, H, Lk, D], grad_out [B, H, Lq, D], any device; inputs validated
// by the caller. Rows with no visible key get zero gradients.
AttentionGradients attention_reference_backward(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& grad_out,
                                                const BlockMask& mask, double scale);

}  // namespace tessera::detail
