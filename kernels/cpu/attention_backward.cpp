// The tiled CPU attention backward pass: the forward's tiling, probabilities recomputed from the
// log-sum-exp. See Note [CPU attention tiling] in attention_tile.h and Note [CPU attention
// backward] below.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/attention_kernels.h"
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
std::vector<int64_t> key_ranges(const MaskView& mask, int64_t lk, int64_t parts) {
  std::vector<int64_t> bounds{0};
  if (parts > 1) {
    std::vector<int64_t> seen(static_cast<size_t>(lk + 1), 0);  // difference array
    for (size_t q = 0; q < mask.row_begin.size(); ++q) {
      const int64_t b = mask.row_begin[q], e = mask.row_end[q];
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
void backward_kernel(const BackwardParams& p) {
  const int64_t Lq = p.lq, D = p.head_dim, Lk = p.lk;
  const int64_t BH = p.batch * p.heads;
  if (BH == 0 || D == 0) return;
  const MaskView& mask = p.mask;
  const TileSizes sizes = p.tiles;
  const float scale = p.scale;
  const T* q_data = static_cast<const T*>(p.q);
  const T* k_data = static_cast<const T*>(p.k);
  const T* v_data = static_cast<const T*>(p.v);
  const T* o_data = static_cast<const T*>(p.out);
  const T* go_data = static_cast<const T*>(p.grad_out);
  const float* lse_data = p.lse;
  T* dq_data = static_cast<T*>(p.dq);
  T* dk_data = static_cast<T*>(p.dk);
  T* dv_data = static_cast<T*>(p.dv);

  const std::span<const QueryTile> tiles = mask.tiles;
  int64_t max_rows = 0;
  for (const QueryTile& t : tiles) max_rows = std::max(max_rows, t.q_end - t.q_begin);
  const int64_t chunk = std::min(sizes.chunk, Lk);

  const bool* allowed = mask.dense;
  const bool dense = allowed != nullptr;
  const float alpha = scale * kLog2e;  // base-2 scores, as in the forward pass
  constexpr bool kFloat = std::is_same_v<T, float>;

  // Key ranges per head; see Note [CPU attention backward].
  const int64_t threads = std::max(1, p.threads.num_threads);
  const int64_t wanted = BH >= 2 * threads ? 1 : (4 * threads + BH - 1) / BH;
  const std::vector<int64_t> ranges =
      key_ranges(mask, Lk, std::min(wanted, (Lk + chunk - 1) / chunk));
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

  run_tasks(BH * G, p.threads, make_scratch, run);

  if (G > 1) {
    // dQ = the sum of the ranges' shares, in range order; one task per (batch, head).
    auto row_buffer = [D] { return std::vector<float>(static_cast<size_t>(D)); };
    run_tasks(BH, p.threads, row_buffer, [&](int64_t bh, std::vector<float>& row) {
      for (int64_t i = 0; i < Lq; ++i) {
        std::fill(row.begin(), row.end(), 0.f);
        for (int64_t r = 0; r < G; ++r) {
          const float* share = dq_shares.data() + ((bh * G + r) * Lq + i) * D;
          for (int64_t d = 0; d < D; ++d) row[d] += share[d];
        }
        store(row.data(), D, dq_data + (bh * Lq + i) * D);
      }
    });
  }
}

}  // namespace

}  // namespace detail

void launch_attention_backward(const BackwardParams& params, DType dtype) {
  const TileSizes& sizes = params.tiles;
  TESSERA_CHECK(sizes.rows >= 1 && sizes.chunk >= 1 && sizes.group >= 1,
                "cpu::launch_attention_backward: tile sizes must be >= 1, got {} rows x {} keys, "
                "groups of {} rows",
                sizes.rows, sizes.chunk, sizes.group);
  switch (dtype) {
    case DType::float32:
      detail::backward_kernel<float>(params);
      break;
    case DType::bfloat16:
      detail::backward_kernel<detail::BFloat16>(params);
      break;
  }
}

}  // namespace tessera::cpu
