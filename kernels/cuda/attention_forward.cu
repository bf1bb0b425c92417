// The CUDA attention forward pass: FlashAttention-2-style online softmax over the key chunks of
// each query tile of the BlockMask's plan, tensor cores (mma.sync m16n8k16) with fp32
// accumulation, log-sum-exp output. Free of LibTorch.
//
// Note [CUDA attention design]
// Forward. One thread block (4 warps, 128 threads) per (query tile, batch * head): grid.x is the
// batch * head, grid.y the query tile, tiles ordered heaviest first (schedule.h), so that the long
// tiles of every head start in the first waves. The query tile (at most 64 rows of
// BlockMask::plan(64), cut at segment boundaries for block masks) is loaded into shared memory and
// each warp keeps its 16 rows' Q fragments in registers. The key chunks of the tile (at most 64
// keys, never straddling a full / partial boundary: schedule.h) are visited in order; per chunk:
//   K, V -> shared memory (rows past the chunk zero-filled);
//   S = Q K^T (16 x 64 per warp, fp32 registers), times scale * log2(e) (base-2 scores);
//   partial chunks only: S = -inf where the element rule forbids the key (full chunks skip it);
//   online softmax per row: m' = max(m, rowmax S); O *= 2^(m - m'); l = l 2^(m - m') + rowsum P,
//     P = 2^(S - m'), a row that has seen nothing yet keeps m = -inf and uses 0 as its shift so
//     that every term is 2^-inf = 0, never NaN;
//   O += P V, P taken straight from the S registers (Note [P from registers]).
// At the end O / l goes out in the input dtype and lse = (m + log2 l) ln 2; a row with l = 0 (no
// visible key) gets 0 and -inf, as on the CPU.
// Backward (attention_backward.cu). A preprocessing kernel computes delta = rowsum(dO * O). Then
// one block per (batch * head, key block of 64 keys): K and V stay in shared memory, each warp owns
// 16 keys' dK and dV accumulators (registers), and the block walks the query tiles whose key range
// meets its keys (full or partial, as in the forward pass): P = 2^(S log2 e - lse log2 e) is
// recomputed from the forward's lse, dP = dO V^T, dS = P (dP - delta); P and dS go to shared memory
// (in the input dtype) for dV += P^T dO, dK += dS^T Q and dQ += dS K, the last added atomically in
// float32 (several key blocks touch each query row) and converted afterwards.
// Simplicity first: no software pipelining of the loads (cp.async), no warp specialisation, no
// Hopper wgmma / TMA; the kernels have never been run (docs/cuda.md).
//
// Note [P from registers]
// The S accumulators of n-tiles 2i and 2i+1 (keys 16i..16i+15) hold, per lane, rows g and g + 8 at
// columns 2t, 2t+1 of each n-tile: exactly the A fragment a0..a3 of the product P V with k = those
// 16 keys (Note [mma.m16n8k16 fragments]), so P never goes through shared memory in the forward.

#include "attention_common.cuh"

namespace tessera::cuda {
namespace detail {
namespace {

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(const ForwardParams p) {
  constexpr int kStride = kRowStride<D>;
  constexpr int kKSteps = D / 16;   // k-steps of S = Q K^T over the head dim
  constexpr int kDTiles = D / 8;    // n-tiles of O over the head dim
  constexpr int kKeyTiles = kTileKeys / 8;  // n-tiles of S over the chunk's keys
  const float kNegInf = __int_as_float(0xff800000u);

  TESSERA_DYNAMIC_SHARED(shared_raw);
  T* sQ = reinterpret_cast<T*>(shared_raw);
  T* sK = sQ + kTileRows * kStride;
  T* sV = sK + kTileKeys * kStride;

  const int64_t bh = blockIdx.x;
  const int* tile = p.tiles + 4 * static_cast<int64_t>(blockIdx.y);
  const int q0 = tile[0], rows = tile[1] - tile[0];
  const int chunk_begin = tile[2], chunk_end = tile[3];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;

  const T* Q = static_cast<const T*>(p.q) + (bh * p.lq + q0) * D;
  const T* K = static_cast<const T*>(p.k) + bh * p.lk * D;
  const T* V = static_cast<const T*>(p.v) + bh * p.lk * D;

  load_tile<T, D>(sQ, Q, rows);
  __syncthreads();

  // This warp's 16 query rows as A fragments, one per 16 columns of the head dim.
  uint32_t q_frag[kKSteps][4];
  {
    const fragment::RowCol a = fragment::a_rows(lane);
TESSERA_UNROLL
    for (int kk = 0; kk < kKSteps; ++kk) {
      ldmatrix_x4(q_frag[kk], sQ + (warp * 16 + a.row) * kStride + kk * 16 + a.col);
    }
  }

  // The two rows this lane holds accumulators for: r = 0 for row g, r = 1 for row g + 8.
  int local_row[2], q_row[2], row_lo[2], row_hi[2];
  bool row_valid[2];
TESSERA_UNROLL
  for (int r = 0; r < 2; ++r) {
    local_row[r] = warp * 16 + lane / 4 + r * 8;
    row_valid[r] = local_row[r] < rows;
    q_row[r] = q0 + local_row[r];
    row_lo[r] = row_valid[r] ? p.mask.row_begin[q_row[r]] : 0;
    row_hi[r] = row_valid[r] ? p.mask.row_end[q_row[r]] : 0;
  }

  float o[kDTiles][4];
TESSERA_UNROLL
  for (int dt = 0; dt < kDTiles; ++dt) {
TESSERA_UNROLL
    for (int i = 0; i < 4; ++i) o[dt][i] = 0.f;
  }
  float row_max[2] = {kNegInf, kNegInf};
  float row_sum[2] = {0.f, 0.f};  // this lane's share; summed over the lane quad at the end
  const float scale_log2 = p.scale * kLog2e;

  for (int c = chunk_begin; c < chunk_end; ++c) {
    const int* chunk = p.chunks + 4 * static_cast<int64_t>(c);
    const int k0 = chunk[0], keys = chunk[1] - chunk[0];
    const bool full = chunk[2] != 0;

    __syncthreads();  // every warp is done with the previous chunk's K and V
    load_tile<T, D>(sK, K + static_cast<int64_t>(k0) * D, keys);
    load_tile<T, D>(sV, V + static_cast<int64_t>(k0) * D, keys);
    __syncthreads();

    // S = Q K^T for this warp's 16 rows x 64 keys.
    float s[kKeyTiles][4];
TESSERA_UNROLL
    for (int nt = 0; nt < kKeyTiles; ++nt) {
TESSERA_UNROLL
      for (int i = 0; i < 4; ++i) s[nt][i] = 0.f;
    }
    {
      const fragment::RowCol b = fragment::b_rows(lane);
TESSERA_UNROLL
      for (int kk = 0; kk < kKSteps; ++kk) {
TESSERA_UNROLL
        for (int np = 0; np < kKeyTiles / 2; ++np) {
          uint32_t k_frag[4];
          ldmatrix_x4(k_frag, sK + (np * 16 + b.row) * kStride + kk * 16 + b.col);
          mma<T>(s[2 * np], q_frag[kk], k_frag[0], k_frag[1]);
          mma<T>(s[2 * np + 1], q_frag[kk], k_frag[2], k_frag[3]);
        }
      }
    }

    // Base-2 scores; -inf where the key is past the chunk, the row past the tile, or (partial
    // chunks only) the element rule forbids the pair.
    float chunk_max[2] = {kNegInf, kNegInf};
TESSERA_UNROLL
    for (int nt = 0; nt < kKeyTiles; ++nt) {
TESSERA_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2;
        const int col = nt * 8 + (lane % 4) * 2 + (i % 2);
        bool ok = row_valid[r] && col < keys;
        if (ok && !full) {
          ok = element_allowed(p.mask, p.lk, row_lo[r], row_hi[r], q_row[r], k0 + col);
        }
        s[nt][i] = ok ? s[nt][i] * scale_log2 : kNegInf;
        chunk_max[r] = fmaxf(chunk_max[r], s[nt][i]);
      }
    }

    // Online softmax update (the four lanes of a quad hold the same two rows).
    float shift[2];
TESSERA_UNROLL
    for (int r = 0; r < 2; ++r) {
      chunk_max[r] = fmaxf(chunk_max[r], __shfl_xor_sync(0xffffffffu, chunk_max[r], 1));
      chunk_max[r] = fmaxf(chunk_max[r], __shfl_xor_sync(0xffffffffu, chunk_max[r], 2));
      const float new_max = fmaxf(row_max[r], chunk_max[r]);
      shift[r] = new_max == kNegInf ? 0.f : new_max;  // nothing seen yet: every 2^(x - 0) is 0
      const float correction = exp2f(row_max[r] - shift[r]);  // 2^-inf = 0 for a fresh row
      row_max[r] = new_max;
      row_sum[r] *= correction;
TESSERA_UNROLL
      for (int dt = 0; dt < kDTiles; ++dt) {
        o[dt][2 * r] *= correction;
        o[dt][2 * r + 1] *= correction;
      }
    }
TESSERA_UNROLL
    for (int nt = 0; nt < kKeyTiles; ++nt) {
TESSERA_UNROLL
      for (int i = 0; i < 4; ++i) {
        s[nt][i] = exp2f(s[nt][i] - shift[i / 2]);
        row_sum[i / 2] += s[nt][i];
      }
    }

    // O += P V (Note [P from registers]).
    {
      const fragment::RowCol b = fragment::b_cols(lane);
TESSERA_UNROLL
      for (int kk = 0; kk < kTileKeys / 16; ++kk) {
        const uint32_t p_frag[4] = {
            pack<T>(s[2 * kk][0], s[2 * kk][1]), pack<T>(s[2 * kk][2], s[2 * kk][3]),
            pack<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
            pack<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
TESSERA_UNROLL
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t v_frag[4];
          ldmatrix_x4_trans(v_frag, sV + (kk * 16 + b.row) * kStride + dp * 16 + b.col);
          mma<T>(o[2 * dp], p_frag, v_frag[0], v_frag[1]);
          mma<T>(o[2 * dp + 1], p_frag, v_frag[2], v_frag[3]);
        }
      }
    }
  }

  // Finish: O / l and the log-sum-exp, or 0 and -inf for a row that saw no key.
  T* out = static_cast<T*>(p.out);
TESSERA_UNROLL
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const bool seen = sum > 0.f;
    const float inverse = seen ? 1.f / sum : 0.f;
    if (!row_valid[r]) continue;
    const int64_t row = bh * p.lq + q_row[r];
    T* out_row = out + row * D;
TESSERA_UNROLL
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + (lane % 4) * 2;
      *reinterpret_cast<uint32_t*>(out_row + col) =
          pack<T>(o[dt][2 * r] * inverse, o[dt][2 * r + 1] * inverse);
    }
    if (lane % 4 == 0) p.lse[row] = seen ? (row_max[r] + log2f(sum)) * kLn2 : kNegInf;
  }
}

#ifndef TESSERA_CUDA_EMULATION
template <typename T, int D>
cudaError_t launch_forward(const ForwardParams& p, cudaStream_t stream) {
  constexpr int kSharedBytes = (kTileRows + 2 * kTileKeys) * kRowStride<D> * static_cast<int>(sizeof(T));
  cudaError_t err = cudaFuncSetAttribute(attention_forward_kernel<T, D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(p.batch_heads), static_cast<unsigned>(p.num_tiles));
  attention_forward_kernel<T, D><<<grid, kThreads, kSharedBytes, stream>>>(p);
  return cudaGetLastError();
}
#endif  // TESSERA_CUDA_EMULATION

}  // namespace
}  // namespace detail

#ifndef TESSERA_CUDA_EMULATION

cudaError_t launch_attention_forward(const ForwardParams& params, DType dtype,
                                     cudaStream_t stream) {
  if (params.batch_heads <= 0 || params.num_tiles <= 0) return cudaSuccess;  // nothing to do
  if (params.batch_heads > 0x7fffffff || params.num_tiles > 65535) return cudaErrorInvalidValue;
  const bool bf16 = dtype == DType::bfloat16;
  switch (params.head_dim) {
    case 64:
      return bf16 ? detail::launch_forward<__nv_bfloat16, 64>(params, stream)
                  : detail::launch_forward<__half, 64>(params, stream);
    case 128:
      return bf16 ? detail::launch_forward<__nv_bfloat16, 128>(params, stream)
                  : detail::launch_forward<__half, 128>(params, stream);
    default:
      return cudaErrorInvalidValue;
  }
}
#endif  // TESSERA_CUDA_EMULATION

}  // namespace tessera::cuda
