// Dense masked attention: the fallback backend and what tests compare the kernels with. It
// materialises the [B, H, Lq, Lk] scores, so it is for correctness, not speed.

#include "attention/reference.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <limits>

namespace tessera {
namespace {

struct DenseProbabilities {
  at::Tensor probs;   // [B, H, Lq, Lk] in q's dtype; exactly 0 off the mask and on empty rows
  at::Tensor scores;  // scaled scores, -inf off the mask
};

DenseProbabilities dense_probabilities(const at::Tensor& q, const at::Tensor& k,
                                       const BlockMask& mask, double scale) {
  const at::Tensor allowed = mask.to_dense().to(q.device());  // [Lq, Lk]
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
  scores.masked_fill_(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  // softmax over an all -inf row is NaN; such rows see no key and are defined to be 0.
  const at::Tensor empty_row = allowed.any(-1).logical_not().unsqueeze(-1);  // [Lq, 1]
  at::Tensor probs = at::softmax(scores, -1).masked_fill_(empty_row, 0);
  return {std::move(probs), std::move(scores)};
}

}  // namespace

AttentionForward attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const BlockMask& mask, double scale) {
  check_attention_inputs(q, k, v, mask, AttentionBackend::reference);
  // Expected values, not a differentiable op (the autograd Function differentiates it instead).
  c10::NoGradGuard no_grad;
  auto [probs, scores] = dense_probabilities(q, k, mask, scale);
  at::Tensor out = at::matmul(probs, v);
  // The log-sum-exp is reported in float32; take it from at least float32 scores so a bfloat16
  // input does not cost it precision. logsumexp of an all -inf row is -inf.
  const at::Tensor wide = scores.scalar_type() == at::kDouble ? scores : scores.to(at::kFloat);
  at::Tensor lse = at::logsumexp(wide, -1).to(at::kFloat);
  return {std::move(out), std::move(lse)};
}

namespace detail {

// With P the probabilities, O = P V and dO the output gradient:
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),  dQ = scale dS K,  dK = scale dS^T
//   Q.
// P is 0 off the mask and on empty rows, so dS (hence every gradient) is 0 there.
AttentionGradients attention_reference_backward(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& grad_out,
                                                const BlockMask& mask, double scale) {
  c10::NoGradGuard no_grad;
  const at::Tensor probs = dense_probabilities(q, k, mask, scale).probs;
  const at::Tensor grad_out_typed = grad_out.to(q.scalar_type());
  at::Tensor dv = at::matmul(probs.transpose(-2, -1), grad_out_typed);
  const at::Tensor dp = at::matmul(grad_out_typed, v.transpose(-2, -1));
  const at::Tensor delta = (probs * dp).sum(-1, /*keepdim=*/true);
  const at::Tensor ds = probs * (dp - delta);
  at::Tensor dq = at::matmul(ds, k).mul_(scale);
  at::Tensor dk = at::matmul(ds.transpose(-2, -1), q).mul_(scale);
  return {std::move(dq), std::move(dk), std::move(dv)};
}

}  // namespace detail
}  // namespace tessera
