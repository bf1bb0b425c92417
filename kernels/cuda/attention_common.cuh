#pragma once
// Device helpers shared by attention_forward.cu and attention_backward.cu: the tensor-core
// instructions (ldmatrix, mma.sync m16n8k16 with fp32 accumulation), packing, tile loads into
// shared memory, and the mask's element rule. See Note [mma.m16n8k16 fragments] in
// fragment_layout.h for the register layouts.

#ifdef TESSERA_CUDA_EMULATION
// tests/cuda/emulation: the kernels compiled as C++ and run on CPU threads, with ldmatrix,
// mma.sync, shuffles and barriers emulated; the includer has included cuda_emulation.h, which
// also defines TESSERA_DYNAMIC_SHARED and TESSERA_UNROLL.
#ifndef TESSERA_CUDA_EMULATION_HEADER
#error "include tests/cuda/emulation/cuda_emulation.h before the kernels"
#endif
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define TESSERA_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#define TESSERA_UNROLL _Pragma("unroll")
#endif

#include <cstdint>
#include <cstring>

#include "attention_kernels.h"
#include "fragment_layout.h"

namespace tessera::cuda::detail {

// Shared-memory rows are padded by 8 elements (16 bytes): a row of D = 64 or 128 b16 elements is
// 144 or 272 bytes, so the 8 rows one ldmatrix matrix reads start 4 banks apart and cover all 32
// banks once (no bank conflicts), and every row start stays 16-byte aligned.
template <int D>
inline constexpr int kRowStride = D + 8;
inline constexpr int kScoreStride = kTileKeys + 8;  // P and dS tiles (64 keys wide)

#ifndef TESSERA_CUDA_EMULATION
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

// c += a * b for one 16 x 8 x 16 product (A row-major, B column-major, fp32 accumulators).
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1);

template <>
__device__ __forceinline__ void mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                   uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif  // TESSERA_CUDA_EMULATION

// Two floats as one register of two b16 values, `lo` in the low half (the lower column).
template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

template <>
__device__ __forceinline__ uint32_t pack<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
  return __half2float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// Copies rows [0, rows) of a [*, D] global array into a 64-row shared tile (row stride
// kRowStride<D>), zero-filling rows rows..63: zero keys and values keep every product finite
// whatever lies beyond the tensor's end, and such rows are masked anyway. 16-byte accesses; all
// kThreads threads of the block must call it.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* shared, const T* global, int rows) {
  constexpr int kVectorsPerRow = D / 8;  // 8 b16 elements per 16-byte vector
  constexpr int kIterations = kTileRows * kVectorsPerRow / kThreads;
  static_assert(kTileRows * kVectorsPerRow % kThreads == 0, "tile load must divide evenly");
TESSERA_UNROLL
  for (int it = 0; it < kIterations; ++it) {
    const int i = static_cast<int>(threadIdx.x) + it * kThreads;
    const int row = i / kVectorsPerRow, col = (i % kVectorsPerRow) * 8;
    uint4 value = make_uint4(0u, 0u, 0u, 0u);
    if (row < rows) {
      value = *reinterpret_cast<const uint4*>(global + static_cast<int64_t>(row) * D + col);
    }
    *reinterpret_cast<uint4*>(shared + row * kRowStride<D> + col) = value;
  }
}

// The element rule of a partial tile: may query row q, whose interval is [key_lo, key_hi), see
// key k? (The interval first; the dense byte only for the dense rule.)
__device__ __forceinline__ bool element_allowed(const ElementRule& mask, int lk, int key_lo,
                                                int key_hi, int q, int k) {
  if (k < key_lo || k >= key_hi) return false;
  if (mask.dense != nullptr) return mask.dense[static_cast<int64_t>(q) * lk + k] != 0;
  return true;
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace tessera::cuda::detail
