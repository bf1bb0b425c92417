#pragma once
// Dense masked attention, forward and backward, in float64 from first principles: the independent
// reference the CPU and CUDA kernel tests compare against. `allowed` [Lq, Lk] bool (moved to the
// inputs' device). A row with no visible key: out 0, lse -inf, zero gradients.

#include <ATen/ATen.h>

#include <limits>
#include <tuple>

namespace tessera::test_support {

struct DenseAttention {
  at::Tensor out, lse, dq, dk, dv;  // float64
};

inline DenseAttention dense_attention_float64(const at::Tensor& q_in, const at::Tensor& k_in,
                                              const at::Tensor& v_in, const at::Tensor& go_in,
                                              const at::Tensor& allowed_in, double scale) {
  const at::Tensor q = q_in.to(at::kDouble), k = k_in.to(at::kDouble), v = v_in.to(at::kDouble);
  const at::Tensor go = go_in.to(at::kDouble);
  const at::Tensor allowed = allowed_in.to(q.device());
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor s =
      at::matmul(q, k.transpose(-1, -2)).mul(scale).masked_fill(allowed.logical_not(), -inf);
  const at::Tensor any = allowed.any(-1, true);  // [Lq, 1]
  const at::Tensor row_max = std::get<0>(s.max(-1, true));
  const at::Tensor shift = at::where(any, row_max, at::zeros_like(row_max));
  const at::Tensor e = (s - shift).exp();  // 0 where masked
  const at::Tensor denom = e.sum(-1, true);
  const at::Tensor p =
      at::where(any, e / at::where(any, denom, at::ones_like(denom)), at::zeros_like(e));
  DenseAttention r;
  r.out = at::matmul(p, v);
  r.lse = at::where(any, shift + denom.log(), at::full_like(denom, -inf)).squeeze(-1);
  // Backward, closed form: dS = P ∘ (dP − rowsum(P ∘ dP)).
  r.dv = at::matmul(p.transpose(-1, -2), go);
  const at::Tensor dp = at::matmul(go, v.transpose(-1, -2));
  const at::Tensor ds = p * (dp - (p * dp).sum(-1, true));
  r.dq = at::matmul(ds, k).mul(scale);
  r.dk = at::matmul(ds.transpose(-1, -2), q).mul(scale);
  return r;
}

}  // namespace tessera::test_support
