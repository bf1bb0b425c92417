// The tiled CPU attention forward pass: online softmax over the key chunks of each query tile.
// See Note [CPU attention tiling] and Note [Tile GEMMs] in attention_tile.h.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <vector>

#include "cpu/attention_kernels.h"
#include "cpu/attention_tile.h"
#include "tessera/core/error.h"
#include "tessera/core/logging.h"

namespace tessera::cpu {

namespace detail {

void gemm_eigen(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
  const Map a(A, ta == Trans::yes ? K : M, ta == Trans::yes ? M : K, Eigen::OuterStride<>(lda));
  const Map b(B, tb == Trans::yes ? N : K, tb == Trans::yes ? K : N, Eigen::OuterStride<>(ldb));
  Eigen::Map<Mat, 0, Eigen::OuterStride<>> c(C, M, N, Eigen::OuterStride<>(ldc));
  auto product = [&](const auto& x, const auto& y) {
    if (beta == 0.f) {
      c.noalias() = alpha * (x * y);
    } else {
      if (beta != 1.f) c *= beta;
      c.noalias() += alpha * (x * y);
    }
  };
  if (ta == Trans::yes && tb == Trans::yes) {
    product(a.transpose(), b.transpose());
  } else if (ta == Trans::yes) {
    product(a.transpose(), b);
  } else if (tb == Trans::yes) {
    product(a, b.transpose());
  } else {
    product(a, b);
  }
}

void warn_serial_build() {
  static std::once_flag once;
  std::call_once(once, [] {
    TESSERA_LOG_WARN(
        "tessera: the CPU attention kernels were compiled without OpenMP, so they run on one "
        "thread; build the tessera target with OpenMP (see Note [Kernels need OpenMP] in "
        "kernels/cpu/attention_tile.h)");
  });
}

namespace {

// One thread's buffers, sized for the largest tile and chunk.
struct ForwardScratch {
  std::vector<float> s;                 // scores, then probabilities: rows x chunk
  std::vector<float> q, k, v, o;        // float32 copies of bfloat16 tiles; o: the accumulator
  std::vector<float> row_max, row_sum;  // online softmax state, base 2
};

template <typename T>
void forward_kernel(const ForwardParams& p) {
  const int64_t H = p.heads, Lq = p.lq, D = p.head_dim, Lk = p.lk;
  const int64_t BH = p.batch * p.heads;
  const MaskView& mask = p.mask;
  const TileSizes sizes = p.tiles;
  const T* q_data = static_cast<const T*>(p.q);
  const T* k_data = static_cast<const T*>(p.k);
  const T* v_data = static_cast<const T*>(p.v);
  // Where (batch, head) bh's rows start: any batch and head strides (Note [Strided heads]).
  auto rows_of = [H](const HeadStrides& st, int64_t bh) {
    return (bh / H) * st.batch + (bh % H) * st.head;
  };
  T* out_data = static_cast<T*>(p.out);
  float* lse_data = p.lse;

  const std::span<const QueryTile> tiles = mask.tiles;
  const auto num_tiles = static_cast<int64_t>(tiles.size());
  int64_t max_rows = 0;
  for (const QueryTile& t : tiles) max_rows = std::max(max_rows, t.q_end - t.q_begin);
  const int64_t chunk = std::min(sizes.chunk, Lk);

  // Most expensive tiles first, so that the last tasks handed out are short (see run_tasks).
  std::vector<int64_t> order(tiles.size());
  std::iota(order.begin(), order.end(), 0);
  auto cost = [&](int64_t i) {
    const QueryTile& t = tiles[i];
    return (t.q_end - t.q_begin) * std::max<int64_t>(0, t.key_end - t.key_begin);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return cost(a) > cost(b); });

  const bool* allowed = mask.dense;
  const bool dense = allowed != nullptr;
  // Scores are kept in base 2: S = (scale * log2 e) q.k, so that P = 2^(S - max).
  const float alpha = p.scale * kLog2e;
  constexpr bool kFloat = std::is_same_v<T, float>;

  auto make_scratch = [&] {
    ForwardScratch w;
    w.s.resize(static_cast<size_t>(max_rows * chunk));
    if constexpr (!kFloat) {
      w.q.resize(static_cast<size_t>(max_rows * D));
      w.k.resize(static_cast<size_t>(chunk * D));
      w.v.resize(static_cast<size_t>(chunk * D));
      w.o.resize(static_cast<size_t>(max_rows * D));
    }
    w.row_max.resize(static_cast<size_t>(max_rows));
    w.row_sum.resize(static_cast<size_t>(max_rows));
    return w;
  };

  auto run = [&](int64_t task, ForwardScratch& w) {
    const QueryTile& tile = tiles[order[task / BH]];
    const int64_t bh = task % BH;
    const int64_t q0 = tile.q_begin, m = tile.q_end - tile.q_begin;
    const float* Q = as_float(q_data + rows_of(p.q_strides, bh) + q0 * D, m * D, w.q.data());
    // A float32 output is its own accumulator; bfloat16 accumulates in w.o.
    float* O;
    if constexpr (kFloat) {
      O = out_data + (bh * Lq + q0) * D;
    } else {
      O = w.o.data();
    }
    zero(O, m * D);
    float* mx = w.row_max.data();
    float* sum = w.row_sum.data();
    std::fill(mx, mx + m, kNegInf);
    std::fill(sum, sum + m, 0.f);

    // Rows [r0, r1) of the tile against keys [b0, b1), inside the chunk whose (converted) keys
    // and values start at K and V, key c0. See Note [CPU attention tiling].
    auto block = [&](const float* K, const float* V, int64_t c0, int64_t r0, int64_t r1, int64_t b0,
                     int64_t b1, bool block_full) {
      const int64_t g = r1 - r0, n = b1 - b0;
      float* S = w.s.data();  // g x n
      gemm(Trans::no, Trans::yes, g, n, D, alpha, Q + r0 * D, D, K + (b0 - c0) * D, D, 0.f, S, n);
      for (int64_t i = r0; i < r1; ++i) {
        float* s = S + (i - r0) * n;
        int64_t lo = 0, hi = n;
        if (!block_full) {
          row_window(mask, q0 + i, b0, n, lo, hi);
          if (dense) apply_dense_mask(allowed + (q0 + i) * Lk + b0, s, lo, hi);
        }
        const float block_max = row_max(s + lo, hi - lo);
        if (block_max == kNegInf) {  // the row sees no key of this block
          zero(s, n);
          continue;
        }
        const float new_max = std::max(mx[i], block_max);
        const float block_sum = exp2_shift_sum(s + lo, hi - lo, new_max);
        zero(s, lo);
        zero(s + hi, n - hi);
        if (new_max > mx[i]) {
          // Rescale what the row has accumulated to the new maximum (2^-inf = 0 for a row that
          // had nothing yet, whose O row is still 0).
          const float correction = std::exp2(mx[i] - new_max);
          sum[i] *= correction;
          scale_row(O + i * D, D, correction);
          mx[i] = new_max;
        }
        sum[i] += block_sum;
      }
      gemm(Trans::no, Trans::no, g, D, n, 1.f, S, n, V + (b0 - c0) * D, D, 1.f, O + r0 * D, D);
    };
    auto visit_chunk = [&](int64_t c0, int64_t c1, bool full) {
      // bfloat16 keys and values are converted once per chunk; blocks index into the copy.
      const float* K =
          as_float(k_data + rows_of(p.k_strides, bh) + c0 * D, (c1 - c0) * D, w.k.data());
      const float* V =
          as_float(v_data + rows_of(p.v_strides, bh) + c0 * D, (c1 - c0) * D, w.v.data());
      for_each_block(mask, q0, m, c0, c1, full, sizes.group,
                     [&](int64_t r0, int64_t r1, int64_t b0, int64_t b1, bool block_full) {
                       block(K, V, c0, r0, r1, b0, b1, block_full);
                     });
    };
    for_each_key_chunk(tile, chunk, visit_chunk);

    float* L = lse_data + bh * Lq + q0;
    for (int64_t i = 0; i < m; ++i) {
      float* o = O + i * D;
      if (sum[i] == 0.f) {  // no visible key: output 0, lse -inf (documented)
        zero(o, D);
        L[i] = kNegInf;
      } else {
        scale_row(o, D, 1.f / sum[i]);
        L[i] = (mx[i] + std::log2(sum[i])) * kLn2;
      }
    }
    if constexpr (!kFloat) store(O, m * D, out_data + (bh * Lq + q0) * D);
  };

  run_tasks(num_tiles * BH, p.threads, make_scratch, run);
}

}  // namespace

}  // namespace detail

void launch_attention_forward(const ForwardParams& params, DType dtype) {
  const TileSizes& sizes = params.tiles;
  TESSERA_CHECK(sizes.rows >= 1 && sizes.chunk >= 1 && sizes.group >= 1,
                "cpu::launch_attention_forward: tile sizes must be >= 1, got {} rows x {} keys, "
                "groups of {} rows",
                sizes.rows, sizes.chunk, sizes.group);
  switch (dtype) {
    case DType::float32:
      detail::forward_kernel<float>(params);
      break;
    case DType::bfloat16:
      detail::forward_kernel<detail::BFloat16>(params);
      break;
  }
}

}  // namespace tessera::cpu
