#pragma once
// The CPU attention kernels' interface: parameter structs of raw pointers, strides, sizes and the
// tile plan as plain arrays, and launchers that run a pass on the calling thread and an OpenMP team.
// Free of LibTorch (the ATen adapter is src/attention/backends/cpu_backend.cpp), like
// kernels/cuda/attention_kernels.h. See Note [CPU attention tiling] in attention_tile.h.
//
// Layout: q, k, v, out, grad_out and the gradients are [batch, heads, length, head_dim] in one
// dtype (float32 or bfloat16), rows of head_dim contiguous elements; lse is float32
// [batch, heads, Lq]. Accumulation is in float32 whatever the dtype.
//
// Note [Strided heads]
// Decoding against a KV cache (Note [Decoding against a KV cache]) attends to slots [0, length) of
// [B, H, capacity, D] buffers: a view whose rows are contiguous within each (batch, head) but whose
// heads are capacity·D apart. Copying that view to a contiguous tensor costs the whole cache, at
// every layer of every step, and most of it on freshly faulted pages: raster sampling spent more
// time there than in attention itself. The forward kernel therefore reads each (batch, head)'s
// rows from its own offset, b·stride(0) + h·stride(1) (ForwardParams' HeadStrides), and needs only
// rows of D contiguous elements; the adapter copies other layouts first
// (cpu::with_contiguous_rows in src/attention/backends/backend.h).

#include <cstdint>
#include <span>

#include "tessera/kernels/tile_plan.h"

namespace tessera::cpu {

enum class DType { float32, bfloat16 };

// Tile sizes: query tile rows (the tile plan's max_rows), keys per chunk, and rows per group in
// partial chunks. See Note [CPU attention tiling] for why these. Kernel scratch per thread:
// forward ~rows x chunk + 2 rows x D floats (0.6 MB at D = 64), backward 2 x rows x chunk floats
// (0.5 MB) plus, for bfloat16, the head's dK and dV in float32.
struct TileSizes {
  int64_t rows = 256;
  int64_t chunk = 512;
  int64_t group = 64;
};
inline constexpr TileSizes kForwardTiles{256, 512, 64};
inline constexpr TileSizes kBackwardTiles{128, 512, 64};

// The mask as the kernels read it. Row q sees keys [row_begin[q], row_end[q]) (0 <= begin <= end
// <= Lk); when `dense` is not null, only those of them whose dense[q * Lk + k] is true (BlockMask's
// dense rule: there row_begin / row_end are the row's first and last visible key + 1). `tiles`:
// the tile plan for query tiles of at most TileSizes::rows rows (BlockMask::plan(rows).tiles).
struct MaskView {
  std::span<const int64_t> row_begin;  // [Lq]
  std::span<const int64_t> row_end;    // [Lq]
  const bool* dense = nullptr;         // [Lq, Lk] row-major, or null
  std::span<const QueryTile> tiles;    // in query order, covering every row once
};

// Element offsets of each (batch, head)'s first row: b * batch + h * head.
struct HeadStrides {
  int64_t batch = 0, head = 0;
};

// The work split. The backward pass cuts each head's keys into ranges when B * H alone does not
// give every thread two tasks (Note [CPU attention backward]), so its float32 sums, and its
// results, depend on num_threads; the forward's results do not. The adapter passes
// at::get_num_threads(): the same count gives the same bits, however many threads then run.
struct Threads {
  int num_threads = 1;        // threads the work is split for
  bool allow_parallel = true;  // false: every task on the calling thread (inside a parallel region)
};

struct ForwardParams {
  const void* q = nullptr;  // rows of head_dim contiguous elements at q_strides offsets
  const void* k = nullptr;
  const void* v = nullptr;
  HeadStrides q_strides, k_strides, v_strides;  // any batch and head strides (Note [Strided heads])
  void* out = nullptr;      // [B, H, Lq, D] contiguous, q's dtype
  float* lse = nullptr;     // [B, H, Lq] contiguous, natural log; -inf for a row that sees no key
  int64_t batch = 0, heads = 0, lq = 0, lk = 0, head_dim = 0;
  float scale = 0.f;        // softmax scale
  MaskView mask;            // tiles: the plan for tiles.rows
  TileSizes tiles = kForwardTiles;
  Threads threads;
};

struct BackwardParams {
  const void* q = nullptr;         // [B, H, Lq, D] contiguous
  const void* k = nullptr;         // [B, H, Lk, D] contiguous
  const void* v = nullptr;         // [B, H, Lk, D] contiguous
  const void* out = nullptr;       // [B, H, Lq, D] contiguous: the forward pass's
  const void* grad_out = nullptr;  // [B, H, Lq, D] contiguous
  const float* lse = nullptr;      // [B, H, Lq] contiguous: the forward pass's
  void* dq = nullptr;              // [B, H, Lq, D] contiguous, written
  void* dk = nullptr;              // [B, H, Lk, D] contiguous, written
  void* dv = nullptr;              // [B, H, Lk, D] contiguous, written
  int64_t batch = 0, heads = 0, lq = 0, lk = 0, head_dim = 0;
  float scale = 0.f;
  MaskView mask;                   // tiles: the plan for tiles.rows
  TileSizes tiles = kBackwardTiles;
  Threads threads;
};

// Run the forward pass: out and lse. Throws tessera::Error for tile sizes < 1.
void launch_attention_forward(const ForwardParams& params, DType dtype);

// Run the backward pass, recomputing the probabilities from lse: dq, dk, dv in the dtype.
void launch_attention_backward(const BackwardParams& params, DType dtype);

}  // namespace tessera::cpu
