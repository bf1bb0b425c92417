#pragma once
// The two passes of tessera::attention as separate calls, for code that does its own autograd
// wiring: the PyTorch operators tessera::attention_forward / attention_backward (python/csrc),
// whose autograd formula torch.library registers from Python, are these.
//
//   AttentionForward f = attention_forward(q, k, v, mask);            // out and lse
//   AttentionGradients g = attention_backward(q, k, v, f.out, f.lse, grad_out, mask);
//
// Invariant: attention_backward with forward()'s out and lse, the same mask and options, gives
// the gradients tessera::attention's autograd gives. Both validate their inputs
// (check_attention_inputs, and the saved tensors' shapes) and throw tessera::Error naming what is
// wrong; neither records an autograd graph.

#include <ATen/core/Tensor.h>

#include "tessera/attention/attention.h"

namespace tessera {

/// The forward pass: out [B, H, Lq, D] in q's dtype and lse [B, H, Lq] float32. q, k and v may be
/// strided (the CPU kernel reads strided heads in place); the backend is options.backend resolved
/// as tessera::attention resolves it.
AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, const AttentionOptions& options = {});

/// The backward pass: dL/dq, dL/dk, dL/dv from the forward's out and lse and dL/dout (grad_out,
/// cast to q's dtype). The same mask, scale and backend as the forward, or the gradients are
/// meaningless.
AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, const AttentionOptions& options = {});

}  // namespace tessera
