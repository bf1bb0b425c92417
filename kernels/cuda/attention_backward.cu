// The CUDA attention backward pass: delta = rowsum(dO * O), then one thread block per (batch *
// head, key block) recomputing P from the forward's log-sum-exp; dK and dV in registers, dQ added
// atomically in float32 and converted at the end. See Note [CUDA attention design] in
// attention_forward.cu. Free of LibTorch.

#include <algorithm>

#include "attention_common.cuh"

namespace tessera::cuda {
namespace detail {
namespace {

// delta[row] = sum_d dO[row, d] * O[row, d] in float32: one warp per row.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_delta_kernel(const T* grad_out, const T* out,
                                                                   float* delta, int64_t rows) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (row >= rows) return;
  float sum = 0.f;
TESSERA_UNROLL
  for (int d = lane; d < D; d += 32) {
    sum += to_float<T>(grad_out[row * D + d]) * to_float<T>(out[row * D + d]);
  }
TESSERA_UNROLL
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) delta[row] = sum;
}

// dq = dq_accum in the dtype (the scale is already applied).
template <typename T>
__global__ void __launch_bounds__(256) attention_convert_kernel(const float* from, T* to,
                                                                int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    to[i] = from_float<T>(from[i]);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_backward_kernel(const BackwardParams p) {
  constexpr int kStride = kRowStride<D>;
  constexpr int kKSteps = D / 16;           // k-steps over the head dim
  constexpr int kDTiles = D / 8;            // n-tiles over the head dim
  constexpr int kKeyTiles = kTileKeys / 8;  // n-tiles over the block's keys
  const float kNegInf = __int_as_float(0xff800000u);

  TESSERA_DYNAMIC_SHARED(shared_raw);
  T* sK = reinterpret_cast<T*>(shared_raw);
  T* sV = sK + kTileKeys * kStride;
  T* sQ = sV + kTileKeys * kStride;
  T* sdO = sQ + kTileRows * kStride;
  T* sP = sdO + kTileRows * kStride;          // [64 query rows][64 keys], stride kScoreStride
  T* sdS = sP + kTileRows * kScoreStride;     // likewise
  float* sLse = reinterpret_cast<float*>(sdS + kTileRows * kScoreStride);  // base 2
  float* sDelta = sLse + kTileRows;

  const int64_t bh = blockIdx.x;
  const int* block = p.key_blocks + 4 * static_cast<int64_t>(blockIdx.y);
  const int n0 = block[0], keys = block[1] - block[0];
  const int entry_begin = block[2], entry_end = block[3];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;

  const T* Q = static_cast<const T*>(p.q) + bh * p.lq * D;
  const T* dO = static_cast<const T*>(p.grad_out) + bh * p.lq * D;
  const float* lse = p.lse + bh * p.lq;
  const float* delta = p.delta + bh * p.lq;
  float* dq_accum = p.dq_accum + bh * p.lq * D;

  load_tile<T, D>(sK, static_cast<const T*>(p.k) + (bh * p.lk + n0) * D, keys);
  load_tile<T, D>(sV, static_cast<const T*>(p.v) + (bh * p.lk + n0) * D, keys);

  // This warp's 16 keys (rows 16 warp .. of dK, dV), all D columns.
  float dk[kDTiles][4], dv[kDTiles][4];
TESSERA_UNROLL
  for (int dt = 0; dt < kDTiles; ++dt) {
TESSERA_UNROLL
    for (int i = 0; i < 4; ++i) dk[dt][i] = dv[dt][i] = 0.f;
  }
  const float scale_log2 = p.scale * kLog2e;

  for (int e = entry_begin; e < entry_end; ++e) {
    const int* entry = p.entries + 4 * static_cast<int64_t>(e);
    const int q0 = entry[0], rows = entry[1] - entry[0];
    const bool full = entry[2] != 0;

    __syncthreads();  // the previous entry's reads of sQ, sdO, sP, sdS are done
    load_tile<T, D>(sQ, Q + static_cast<int64_t>(q0) * D, rows);
    load_tile<T, D>(sdO, dO + static_cast<int64_t>(q0) * D, rows);
    if (threadIdx.x < kTileRows) {
      const int i = static_cast<int>(threadIdx.x);
      sLse[i] = i < rows ? lse[q0 + i] * kLog2e : kNegInf;  // -inf * log2 e stays -inf
      sDelta[i] = i < rows ? delta[q0 + i] : 0.f;
    }
    __syncthreads();

    // Step 1: this warp's 16 query rows (16 warp ..) against the 64 keys: S, then P.
    int local_row[2], q_row[2];
    bool row_valid[2];
TESSERA_UNROLL
    for (int r = 0; r < 2; ++r) {
      local_row[r] = warp * 16 + lane / 4 + r * 8;
      row_valid[r] = local_row[r] < rows;
      q_row[r] = q0 + local_row[r];
    }
    float s[kKeyTiles][4], dp[kKeyTiles][4];
TESSERA_UNROLL
    for (int nt = 0; nt < kKeyTiles; ++nt) {
TESSERA_UNROLL
      for (int i = 0; i < 4; ++i) s[nt][i] = dp[nt][i] = 0.f;
    }
    {
      const fragment::RowCol a = fragment::a_rows(lane);
      const fragment::RowCol b = fragment::b_rows(lane);
TESSERA_UNROLL
      for (int kk = 0; kk < kKSteps; ++kk) {
        uint32_t q_frag[4], do_frag[4];
        ldmatrix_x4(q_frag, sQ + (warp * 16 + a.row) * kStride + kk * 16 + a.col);
        ldmatrix_x4(do_frag, sdO + (warp * 16 + a.row) * kStride + kk * 16 + a.col);
TESSERA_UNROLL
        for (int np = 0; np < kKeyTiles / 2; ++np) {
          uint32_t k_frag[4], v_frag[4];
          ldmatrix_x4(k_frag, sK + (np * 16 + b.row) * kStride + kk * 16 + b.col);
          ldmatrix_x4(v_frag, sV + (np * 16 + b.row) * kStride + kk * 16 + b.col);
          mma<T>(s[2 * np], q_frag, k_frag[0], k_frag[1]);        // S = Q K^T
          mma<T>(s[2 * np + 1], q_frag, k_frag[2], k_frag[3]);
          mma<T>(dp[2 * np], do_frag, v_frag[0], v_frag[1]);      // dP = dO V^T
          mma<T>(dp[2 * np + 1], do_frag, v_frag[2], v_frag[3]);
        }
      }
    }

    // P = 2^(S scale log2 e - lse log2 e) where visible (0 elsewhere, and for rows with lse -inf:
    // no visible key, no gradient), dS = P (dP - delta); both to shared memory in the dtype.
    int row_lo[2] = {0, 0}, row_hi[2] = {0, 0};
    if (!full) {
TESSERA_UNROLL
      for (int r = 0; r < 2; ++r) {
        if (row_valid[r]) {
          row_lo[r] = p.mask.row_begin[q_row[r]];
          row_hi[r] = p.mask.row_end[q_row[r]];
        }
      }
    }
TESSERA_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float lse2 = sLse[local_row[r]];
      const float row_delta = sDelta[local_row[r]];
TESSERA_UNROLL
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        float value[2];
TESSERA_UNROLL
        for (int h = 0; h < 2; ++h) {
          const int i = 2 * r + h;
          const int col = nt * 8 + (lane % 4) * 2 + h;
          bool ok = row_valid[r] && col < keys && lse2 != kNegInf;
          if (ok && !full) {
            ok = element_allowed(p.mask, p.lk, row_lo[r], row_hi[r], q_row[r], n0 + col);
          }
          const float prob = ok ? exp2f(s[nt][i] * scale_log2 - lse2) : 0.f;
          s[nt][i] = prob;
          value[h] = prob * (dp[nt][i] - row_delta);
        }
        const int offset = local_row[r] * kScoreStride + nt * 8 + (lane % 4) * 2;
        *reinterpret_cast<uint32_t*>(sP + offset) = pack<T>(s[nt][2 * r], s[nt][2 * r + 1]);
        *reinterpret_cast<uint32_t*>(sdS + offset) = pack<T>(value[0], value[1]);
      }
    }
    __syncthreads();

    // Step 2: dV += P^T dO and dK += dS^T Q for this warp's 16 keys; A = P^T (dS^T) read
    // transposed from the [query][key] tiles, B = dO (Q) stored [query][d].
    {
      const fragment::RowCol a = fragment::a_cols(lane);
      const fragment::RowCol b = fragment::b_cols(lane);
TESSERA_UNROLL
      for (int kk = 0; kk < kTileRows / 16; ++kk) {
        uint32_t pt_frag[4], dst_frag[4];
        ldmatrix_x4_trans(pt_frag, sP + (kk * 16 + a.row) * kScoreStride + warp * 16 + a.col);
        ldmatrix_x4_trans(dst_frag, sdS + (kk * 16 + a.row) * kScoreStride + warp * 16 + a.col);
TESSERA_UNROLL
        for (int np = 0; np < D / 16; ++np) {
          uint32_t do_frag[4], q_frag[4];
          ldmatrix_x4_trans(do_frag, sdO + (kk * 16 + b.row) * kStride + np * 16 + b.col);
          ldmatrix_x4_trans(q_frag, sQ + (kk * 16 + b.row) * kStride + np * 16 + b.col);
          mma<T>(dv[2 * np], pt_frag, do_frag[0], do_frag[1]);
          mma<T>(dv[2 * np + 1], pt_frag, do_frag[2], do_frag[3]);
          mma<T>(dk[2 * np], dst_frag, q_frag[0], q_frag[1]);
          mma<T>(dk[2 * np + 1], dst_frag, q_frag[2], q_frag[3]);
        }
      }
    }

    // Step 3: dQ[this warp's 16 rows] += scale dS K, 16 columns of the head dim at a time, added
    // atomically (the other key blocks of this head add to the same rows).
    {
      const fragment::RowCol a = fragment::a_rows(lane);
      const fragment::RowCol b = fragment::b_cols(lane);
      uint32_t ds_frag[kTileKeys / 16][4];
TESSERA_UNROLL
      for (int kk = 0; kk < kTileKeys / 16; ++kk) {
        ldmatrix_x4(ds_frag[kk], sdS + (warp * 16 + a.row) * kScoreStride + kk * 16 + a.col);
      }
TESSERA_UNROLL
      for (int np = 0; np < D / 16; ++np) {
        float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
TESSERA_UNROLL
        for (int kk = 0; kk < kTileKeys / 16; ++kk) {
          uint32_t k_frag[4];
          ldmatrix_x4_trans(k_frag, sK + (kk * 16 + b.row) * kStride + np * 16 + b.col);
          mma<T>(acc[0], ds_frag[kk], k_frag[0], k_frag[1]);
          mma<T>(acc[1], ds_frag[kk], k_frag[2], k_frag[3]);
        }
TESSERA_UNROLL
        for (int r = 0; r < 2; ++r) {
          if (!row_valid[r]) continue;
          float* dq_row = dq_accum + static_cast<int64_t>(q_row[r]) * D;
TESSERA_UNROLL
          for (int j = 0; j < 2; ++j) {
            const int col = np * 16 + j * 8 + (lane % 4) * 2;
            atomicAdd(dq_row + col, acc[j][2 * r] * p.scale);
            atomicAdd(dq_row + col + 1, acc[j][2 * r + 1] * p.scale);
          }
        }
      }
    }
  }

  // dK = scale dS^T Q and dV = P^T dO for this warp's keys that exist.
  T* dk_out = static_cast<T*>(p.dk) + (bh * p.lk + n0) * D;
  T* dv_out = static_cast<T*>(p.dv) + (bh * p.lk + n0) * D;
TESSERA_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int key = warp * 16 + lane / 4 + r * 8;
    if (key >= keys) continue;
TESSERA_UNROLL
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + (lane % 4) * 2;
      *reinterpret_cast<uint32_t*>(dk_out + static_cast<int64_t>(key) * D + col) =
          pack<T>(dk[dt][2 * r] * p.scale, dk[dt][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dv_out + static_cast<int64_t>(key) * D + col) =
          pack<T>(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

template <typename T, int D>
constexpr int backward_shared_bytes() {
  return (2 * kTileKeys + 2 * kTileRows) * kRowStride<D> * static_cast<int>(sizeof(T)) +
         2 * kTileRows * kScoreStride * static_cast<int>(sizeof(T)) +
         2 * kTileRows * static_cast<int>(sizeof(float));
}

#ifndef TESSERA_CUDA_EMULATION
template <typename T, int D>
cudaError_t launch_backward(const BackwardParams& p, cudaStream_t stream) {
  const int64_t rows = p.batch_heads * p.lq;
  cudaError_t err =
      cudaMemsetAsync(p.dq_accum, 0, static_cast<size_t>(rows) * D * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  if (rows > 0) {
    const int64_t blocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    attention_delta_kernel<T, D><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const T*>(p.grad_out), static_cast<const T*>(p.out), p.delta, rows);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }

  constexpr int kSharedBytes = backward_shared_bytes<T, D>();
  err = cudaFuncSetAttribute(attention_backward_kernel<T, D>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(p.batch_heads), static_cast<unsigned>(p.num_key_blocks));
  attention_backward_kernel<T, D><<<grid, kThreads, kSharedBytes, stream>>>(p);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;

  const int64_t n = rows * D;
  if (n > 0) {
    const int64_t blocks = std::min<int64_t>((n + 255) / 256, 65535);
    attention_convert_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        p.dq_accum, static_cast<T*>(p.dq), n);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  return cudaSuccess;
}
#endif  // TESSERA_CUDA_EMULATION

}  // namespace
}  // namespace detail

#ifndef TESSERA_CUDA_EMULATION

cudaError_t launch_attention_backward(const BackwardParams& params, DType dtype,
                                      cudaStream_t stream) {
  if (params.batch_heads <= 0 || params.num_key_blocks <= 0) return cudaSuccess;
  if (params.batch_heads > 0x7fffffff || params.num_key_blocks > 65535) {
    return cudaErrorInvalidValue;
  }
  const bool bf16 = dtype == DType::bfloat16;
  switch (params.head_dim) {
    case 64:
      return bf16 ? detail::launch_backward<__nv_bfloat16, 64>(params, stream)
                  : detail::launch_backward<__half, 64>(params, stream);
    case 128:
      return bf16 ? detail::launch_backward<__nv_bfloat16, 128>(params, stream)
                  : detail::launch_backward<__half, 128>(params, stream);
    default:
      return cudaErrorInvalidValue;
  }
}
#endif  // TESSERA_CUDA_EMULATION

}  // namespace tessera::cuda
