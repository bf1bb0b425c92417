#pragma once
// The CUDA attention kernels' interface: parameter structs of raw device pointers, and launchers
// that take a cudaStream_t. Free of LibTorch (the ATen adapter is
// src/attention/backends/cuda_backend.cpp). See Note [CUDA attention design] in
// attention_forward.cu and docs/cuda.md.
//
// Layout: q, k, v, out, grad_out and the gradients are contiguous [batch * heads, length, D] in
// one dtype (bfloat16 or float16), 16-byte aligned; lse and delta are float32 [batch * heads, Lq].
// D is 64 or 128.

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tessera::cuda {

enum class DType { bfloat16, float16 };

// The tile size of both passes: query tiles of at most kTileRows rows (BlockMask::plan(64)), key
// chunks of at most kTileKeys keys; 4 warps of 16 query rows (forward) or 16 keys (backward).
inline constexpr int kTileRows = 64;
inline constexpr int kTileKeys = 64;
inline constexpr int kThreads = 128;

// The element rule of partial tiles: row q sees keys [row_begin[q], row_end[q]); when `dense` is
// not null, additionally only the keys whose byte dense[q * Lk + k] is nonzero (BlockMask's dense
// rule; there row_begin / row_end are the row's first and last visible key + 1).
struct ElementRule {
  const int32_t* row_begin = nullptr;  // [Lq]
  const int32_t* row_end = nullptr;    // [Lq]
  const uint8_t* dense = nullptr;      // [Lq, Lk] or null
};

struct ForwardParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;    // [BH, Lq, D], q's dtype
  float* lse = nullptr;   // [BH, Lq], natural log; -inf for a row that sees no key
  int64_t batch_heads = 0;
  int32_t lq = 0, lk = 0, head_dim = 0;
  float scale = 0.f;      // softmax scale
  // The schedule (schedule.h), in device memory: per query tile {q_begin, q_end, chunk_begin,
  // chunk_end} (heaviest first), per key chunk {k_begin, k_end, full, 0}.
  const int32_t* tiles = nullptr;
  int32_t num_tiles = 0;
  const int32_t* chunks = nullptr;
  ElementRule mask;
};

struct BackwardParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const void* grad_out = nullptr;
  const float* lse = nullptr;  // the forward pass's
  float* delta = nullptr;      // scratch [BH, Lq]: rowsum(grad_out * out)
  float* dq_accum = nullptr;   // scratch [BH, Lq, D] float32 (zeroed by the launcher)
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  int64_t batch_heads = 0;
  int32_t lq = 0, lk = 0, head_dim = 0;
  float scale = 0.f;
  // The schedule (schedule.h), in device memory: per key block {k_begin, k_end, entry_begin,
  // entry_end} (heaviest first), per entry {q_begin, q_end, full, 0}.
  const int32_t* key_blocks = nullptr;
  int32_t num_key_blocks = 0;
  const int32_t* entries = nullptr;
  ElementRule mask;
};

// Whether the kernels are instantiated for this head dim.
constexpr bool supported_head_dim(int64_t d) { return d == 64 || d == 128; }

// Enqueue the forward pass on `stream`. Returns the first CUDA error (launch configuration or
// attribute errors; errors inside the kernel surface at the next synchronisation), or
// cudaErrorInvalidValue for an unsupported head dim.
cudaError_t launch_attention_forward(const ForwardParams& params, DType dtype, cudaStream_t stream);

// Enqueue the backward pass: zero dq_accum, delta = rowsum(grad_out * out), the key-block kernel
// (dK, dV written, dQ accumulated atomically in float32), then dq = dq_accum in the dtype.
cudaError_t launch_attention_backward(const BackwardParams& params, DType dtype,
                                      cudaStream_t stream);

}  // namespace tessera::cuda
