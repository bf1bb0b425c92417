// The tiled CPU attention backward pass: the forward's tiling, probabilities recomputed from the
// log-sum-exp. See Note [CPU attention tiling] in attention_tile.h and Note [CPU attention
// backward] below.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/attention_cpu.h"
#include "cpu/attention_tile.h"
#include "tessera/core/error.h"

namespace tessera::cpu {

namespace detail {
namespace {

// Note [CPU attention backward]
// With S = scale Q K^T, P = exp(S - lse) (lse from the forward pass, so no second softmax pass),
// and Delta_i = rowsum(dO_i * O_i) (= rowsum(P_i * dP_i)):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - Delta),  dQ = scale dS K,  dK = scale dS^T Q.
// One task is one (batch, head) and a range of keys: it walks the query tiles of the plan and, per
// key chunk in its range, recomputes P and runs the four products, accumulating dK, dV for its
// keys in float32 buffers it owns, so no two threads ever write the same dK or dV row (no
// atomics, deterministic sums). When B * H alone gives every thread at least two tasks the key
// range is all keys and the task also owns dQ. Otherwise (a single image, few heads, many cores)
// each head's keys are split into ranges of equal visible work, and each task writes its share of
// dQ into a float32 buffer of its own; the shares are summed in a fixed order afterwards (still
// deterministic). Tasks are handed out dynamically (run_tasks).
//
// The key ranges: the number of (row, key) pairs each key is visible to, from the rows'
// intervals, is cut into equal parts; that balances causal masks, whose first keys are seen by
// every row and the last keys by one.
std::vector<int64_t> key_ranges(const BlockMask& mask, int64_t parts) {
  const int64_t lk = mask.key_length();
  std::vector<int64_t> bounds{0};
  if (parts > 1) {
    std::vector<int64_t> seen(static_cast<size_t>(lk + 1), 0);  // difference array
    for (int64_t q = 0; q < mask.query_length(); ++q) {
      const int64_t b = mask.key_begin()[q], e = mask.key_end()[q];
      if (b < e) ++seen[b], --seen[e];
    }
    int64_t total = 0, running = 0;
    for (int64_t j = 0; j < lk; ++j) total += (running += seen[j]);
    running = 0;
    int64_t cumulative = 0;
    for (int64_t j = 0; j < lk && static_cast<int64_t>(bounds.size()) < parts; ++j) {
      cumulative += (running += seen[j]);
      // Close a range once it holds its share of the work (at least one key per range).
      if (cumulative * parts >= total * static_cast<int64_t>(bounds.size()) && j + 1 < lk &&
          j + 1 > bounds.back()) {
        bounds.push_back(j + 1);
      }
    }
  }
  bounds.push_back(lk);
  return bounds;
}

struct BackwardScratch {
  std::vector<float> p, dp;           // rows x chunk
  std::vector<float> q, k, v, o, go;  // float32 copies of bfloat16 tiles
  std::vector<float> dq, dk, dv;      // float32 accumulators (dk, dv: the whole head)
  std::vector<float> lse2, delta;     // per row of the tile
};

template <typename T>
void backward_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& out, const at::Tensor& lse, const at::Tensor& grad_out,
                     const BlockMask& mask, float scale, TileSizes sizes, at::Tensor& dq,
                     at::Tensor& dk, at::Tensor& dv) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  const int64_t BH = B * H;
  if (BH == 0 || D == 0) return;
  const T* q_data = q.const_data_ptr<T>();
  const T* k_data = k.const_data_ptr<T>();
  const T* v_data = v.const_data_ptr<T>();
  const T* o_data = out.const_data_ptr<T>();
  const T* go_data = grad_out.const_data_ptr<T>();
  const float* lse_data = lse.const_data_ptr<float>();
  T* dq_data = dq.mutable_data_ptr<T>();
  T* dk_data = dk.mutable_data_ptr<T>();
  T* dv_data = dv.mutable_data_ptr<T>();

  const std::vector<QueryTile>& tiles = mask.plan(sizes.rows).tiles;
  int64_t max_rows = 0;
  for (const QueryTile& t : tiles) max_rows = std::max(max_rows, t.q_end - t.q_begin);
  const int64_t chunk = std::min(sizes.chunk, Lk);

  const bool dense = mask.rule() == MaskRule::dense;
  const bool* allowed = dense ? mask.dense_mask().const_data_ptr<bool>() : nullptr;
  const float alpha = scale * kLog2e;  // base-2 scores, as in the forward pass
  constexpr bool kFloat = std::is_same_v<T, float>;

  // Key ranges per head; see Note [CPU attention backward].
  const int64_t threads = std::max(1, at::get_num_threads());
  const int64_t wanted = BH >= 2 * threads ? 1 : (4 * threads + BH - 1) / BH;
  const std::vector<int64_t> ranges = key_ranges(mask, std::min(wanted, (Lk + chunk - 1) / chunk));
  const auto G = static_cast<int64_t>(ranges.size()) - 1;
  // With several ranges, each (head, range) task writes its dQ share here: [BH, G, Lq, D].
  std::vector<float> dq_shares(G > 1 ? static_cast<size_t>(BH * G * Lq * D) : 0);

  auto make_scratch = [&] {
    BackwardScratch w;
    w.p.resize(static_cast<size_t>(max_rows * chunk));
    w.dp.resize(static_cast<size_t>(max_rows * chunk));
    w.lse2.resize(static_cast<size_t>(max_rows));
    w.delta.resize(static_cast<size_t>(max_rows));
    if constexpr (!kFloat) {
      w.q.resize(static_cast<size_t>(max_rows * D));
      w.o.resize(static_cast<size_t>(max_rows * D));
      w.go.resize(static_cast<size_t>(max_rows * D));
      w.k.resize(static_cast<size_t>(chunk * D));
      w.v.resize(static_cast<size_t>(chunk * D));
      w.dq.resize(static_cast<size_t>(max_rows * D));
      w.dk.resize(static_cast<size_t>(Lk * D));
      w.dv.resize(static_cast<size_t>(Lk * D));
    }
    return w;
  };

  auto run = [&](int64_t task, BackwardScratch& w) {
    const int64_t bh = task / G, range = task % G;
    const int64_t k_begin = ranges[range], k_end = ranges[range + 1];
    // float32 gradients accumulate in place in the outputs; bfloat16 ones in float32 scratch
    // (indexed by key like the output, only [k_begin, k_end) used).
    float *dK, *dV;
    if constexpr (kFloat) {
      dK = dk_data + bh * Lk * D;
      dV = dv_data + bh * Lk * D;
    } else {
      dK = w.dk.data();
      dV = w.dv.data();
    }
    zero(dK + k_begin * D, (k_end - k_begin) * D);
    zero(dV + k_begin * D, (k_end - k_begin) * D);

    for (const QueryTile& tile : tiles) {
      const int64_t q0 = tile.q_begin, m = tile.q_end - tile.q_begin;
      const int64_t row0 = (bh * Lq + q0) * D;
      // Where this task's dQ rows go: the output (float32, one range), this task's share (several
      // ranges), or float32 scratch converted at the end of the tile (bfloat16, one range).
      float* dQ;
      if (G > 1) {
        dQ = dq_shares.data() + ((bh * G + range) * Lq + q0) * D;
      } else if constexpr (kFloat) {
        dQ = dq_data + row0;
      } else {
        dQ = w.dq.data();
      }
      zero(dQ, m * D);
      if (std::max(tile.key_begin, k_begin) >= std::min(tile.key_end, k_end)) {
        if constexpr (!kFloat) {
          if (G == 1) store(dQ, m * D, dq_data + row0);
        }
        continue;
      }
      const float* Q = as_float(q_data + row0, m * D, w.q.data());
      const float* O = as_float(o_data + row0, m * D, w.o.data());
      const float* dO = as_float(go_data + row0, m * D, w.go.data());
      float* lse2 = w.lse2.data();
      float* delta = w.delta.data();
      for (int64_t i = 0; i < m; ++i) {
        lse2[i] = lse_data[bh * Lq + q0 + i] * kLog2e;
        delta[i] = dot(dO + i * D, O + i * D, D);
      }

      // Rows [r0, r1) of the tile against keys [b0, b1), inside the chunk whose (converted)
      // keys and values start at K and V, key c0. See Note [CPU attention backward].
      auto block = [&](const float* K, const float* V, int64_t c0, int64_t r0, int64_t r1,
                       int64_t b0, int64_t b1, bool block_full) {
        const int64_t g = r1 - r0, n = b1 - b0;
        const float* Qb = Q + r0 * D;
        const float* dOb = dO + r0 * D;
        const float* Kb = K + (b0 - c0) * D;
        const float* Vb = V + (b0 - c0) * D;
        float* P = w.p.data();    // g x n
        float* dP = w.dp.data();  // g x n
        gemm(Trans::no, Trans::yes, g, n, D, alpha, Qb, D, Kb, D, 0.f, P, n);
        for (int64_t i = r0; i < r1; ++i) {
          float* p = P + (i - r0) * n;
          int64_t lo = 0, hi = n;
          if (!block_full) {
            row_window(mask, q0 + i, b0, n, lo, hi);
            if (dense) apply_dense_mask(allowed + (q0 + i) * Lk + b0, p, lo, hi);
          }
          if (lse2[i] == kNegInf) lo = hi = 0;  // a row that saw no key has no gradient
          exp2_shift_sum(p + lo, hi - lo, lse2[i]);
          zero(p, lo);
          zero(p + hi, n - hi);
        }
        // dV[b0:b1] += P^T dO
        gemm(Trans::yes, Trans::no, n, D, g, 1.f, P, n, dOb, D, 1.f, dV + b0 * D, D);
        // dP = dO V^T, then dS = P * (dP - Delta) in place
        gemm(Trans::no, Trans::yes, g, n, D, 1.f, dOb, D, Vb, D, 0.f, dP, n);
        for (int64_t i = r0; i < r1; ++i) {
          softmax_grad(dP + (i - r0) * n, P + (i - r0) * n, n, delta[i]);
        }
        // dQ += scale dS K;  dK[b0:b1] += scale dS^T Q
        gemm(Trans::no, Trans::no, g, D, n, scale, dP, n, Kb, D, 1.f, dQ + r0 * D, D);
        gemm(Trans::yes, Trans::no, n, D, g, scale, dP, n, Qb, D, 1.f, dK + b0 * D, D);
      };
      auto visit_chunk = [&](int64_t c0, int64_t c1, bool full) {
        const float* K = as_float(k_data + (bh * Lk + c0) * D, (c1 - c0) * D, w.k.data());
        const float* V = as_float(v_data + (bh * Lk + c0) * D, (c1 - c0) * D, w.v.data());
        for_each_block(mask, q0, m, c0, c1, full, sizes.group,
                       [&](int64_t r0, int64_t r1, int64_t b0, int64_t b1, bool block_full) {
                         block(K, V, c0, r0, r1, b0, b1, block_full);
                       });
      };
      for_each_key_chunk(tile, chunk, visit_chunk, k_begin, k_end);
      if constexpr (!kFloat) {
        if (G == 1) store(dQ, m * D, dq_data + row0);
      }
    }
    if constexpr (!kFloat) {
      store(dK + k_begin * D, (k_end - k_begin) * D, dk_data + (bh * Lk + k_begin) * D);
      store(dV + k_begin * D, (k_end - k_begin) * D, dv_data + (bh * Lk + k_begin) * D);
    }
  };

  run_tasks(BH * G, make_scratch, run);

  if (G > 1) {
    // dQ = the sum of the ranges' shares, in range order.
    at::parallel_for(0, BH, 1, [&](int64_t bh0, int64_t bh1) {
      std::vector<float> row(static_cast<size_t>(D));
      for (int64_t bh = bh0; bh < bh1; ++bh) {
        for (int64_t i = 0; i < Lq; ++i) {
          std::fill(row.begin(), row.end(), 0.f);
          for (int64_t r = 0; r < G; ++r) {
            const float* share = dq_shares.data() + ((bh * G + r) * Lq + i) * D;
            for (int64_t d = 0; d < D; ++d) row[d] += share[d];
          }
          store(row.data(), D, dq_data + (bh * Lq + i) * D);
        }
      }
    });
  }
}

}  // namespace

AttentionGradients attention_backward_tiled(const at::Tensor& q_in, const at::Tensor& k_in,
                                            const at::Tensor& v_in, const at::Tensor& out_in,
                                            const at::Tensor& lse_in, const at::Tensor& grad_in,
                                            const BlockMask& mask, double scale, TileSizes sizes) {
  TESSERA_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
                "cpu::attention_backward: expected q, k, v of shape [B, H, L, D], got {}, {} and "
                "{} dimensions",
                q_in.dim(), k_in.dim(), v_in.dim());
  TESSERA_CHECK(q_in.size(2) == mask.query_length() && k_in.size(2) == mask.key_length(),
                "cpu::attention_backward: the mask is {}x{} but q has {} rows and k has {}",
                mask.query_length(), mask.key_length(), q_in.size(2), k_in.size(2));
  TESSERA_CHECK(out_in.sizes() == q_in.sizes() && grad_in.sizes() == q_in.sizes(),
                "cpu::attention_backward: out and grad_out must have q's shape");
  TESSERA_CHECK(lse_in.dim() == 3 && lse_in.numel() == q_in.size(0) * q_in.size(1) * q_in.size(2),
                "cpu::attention_backward: expected lse of shape [B, H, Lq]");
  TESSERA_CHECK(sizes.rows >= 1 && sizes.chunk >= 1 && sizes.group >= 1,
                "cpu::attention_backward: tile sizes must be >= 1, got {} rows x {} keys, groups "
                "of {} rows",
                sizes.rows, sizes.chunk, sizes.group);
  const at::ScalarType dtype = q_in.scalar_type();
  // grad_out often arrives expanded or in another layout (e.g. from a sum), and in the output's
  // dtype; the kernel wants contiguous rows of q's dtype.
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor out = out_in.to(dtype).contiguous();
  const at::Tensor grad_out = grad_in.to(dtype).contiguous();
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  switch (dtype) {
    case at::kFloat:
      backward_kernel<float>(q, k, v, out, lse, grad_out, mask, static_cast<float>(scale), sizes,
                             dq, dk, dv);
      break;
    case at::kBFloat16:
      backward_kernel<c10::BFloat16>(q, k, v, out, lse, grad_out, mask, static_cast<float>(scale),
                                     sizes, dq, dk, dv);
      break;
    default:
      TESSERA_FAIL("cpu::attention_backward: expected float32 or bfloat16 inputs, got {}",
                   c10::toString(dtype));
  }
  return {dq, dk, dv};
}

}  // namespace detail

AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& out, const at::Tensor& lse,
                                      const at::Tensor& grad_out, const BlockMask& mask,
                                      double scale) {
  return detail::attention_backward_tiled(q, k, v, out, lse, grad_out, mask, scale,
                                          detail::kBackwardTiles);
}

}  // namespace tessera::cpu
