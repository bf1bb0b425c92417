#pragma once
// The CUDA constructs the attention kernels use, emulated on CPU threads, so that the kernels'
// own source (kernels/cuda/*.cu, compiled as C++ with TESSERA_CUDA_EMULATION) runs without a GPU:
// one std::thread per CUDA thread, a block at a time; __syncthreads is a barrier of the block's
// threads; the warp instructions (ldmatrix.x4[.trans], mma.sync.m16n8k16, __shfl_xor_sync) are
// computed from the 32 lanes' operands, exchanged through a per-warp area between two barriers
// of the warp. The instructions' semantics are this header's reading of the PTX ISA (the same as
// fragment_layout_test.cpp's); the emulation checks the kernels' logic (indexing, masking, online
// softmax, the backward pass's products and atomics), not the hardware. Slow: for small problems.
// Used by tests/cuda/emulation/emulate_kernels.cpp only (tests/cuda/emulation/run).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>  // uint4, dim3 (host declarations only; nothing is linked)

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#define TESSERA_CUDA_EMULATION_HEADER 1
#define __launch_bounds__(...)
#define TESSERA_DYNAMIC_SHARED(name) unsigned char* name = ::emu::block_shared()
#define TESSERA_UNROLL

namespace emu {

struct Index3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Warp {
  std::barrier<> barrier{32};
  uint32_t slot[32][6] = {};
  const void* pointer[32] = {};
};

struct Block {
  explicit Block(size_t shared_bytes, int threads)
      : barrier(threads), shared(shared_bytes, 0xFF) {}  // 0xFFFF: a NaN in bf16 and fp16
  std::barrier<> barrier;
  std::vector<unsigned char> shared;
  Warp warps[32];
};

inline thread_local Index3 thread_index, block_index, grid_dim, block_dim;
inline thread_local Block* current_block = nullptr;

inline unsigned char* block_shared() { return current_block->shared.data(); }
inline Warp& warp() { return current_block->warps[thread_index.x / 32]; }
inline int lane() { return static_cast<int>(thread_index.x % 32); }

// Runs kernel() for every block of `grid` (x fastest), each block on `threads` threads.
template <typename Kernel>
void launch(dim3 grid, int threads, size_t shared_bytes, Kernel&& kernel) {
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      auto block = std::make_unique<Block>(shared_bytes + 16, threads);
      std::vector<std::thread> pool;
      pool.reserve(static_cast<size_t>(threads));
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          thread_index = {static_cast<unsigned>(t), 0, 0};
          block_index = {bx, by, 0};
          grid_dim = {grid.x, grid.y, 1};
          block_dim = {static_cast<unsigned>(threads), 1, 1};
          current_block = block.get();
          kernel();
        });
      }
      for (std::thread& t : pool) t.join();
    }
  }
}

inline float bits_to_float(uint16_t bits, bool bf16) {
  if (bf16) return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

}  // namespace emu

#undef threadIdx
#undef blockIdx
#undef gridDim
#undef blockDim
#define threadIdx (::emu::thread_index)
#define blockIdx (::emu::block_index)
#define gridDim (::emu::grid_dim)
#define blockDim (::emu::block_dim)

inline void __syncthreads() { emu::current_block->barrier.arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float value, int lane_mask) {
  emu::Warp& w = emu::warp();
  const int l = emu::lane();
  w.slot[l][0] = std::bit_cast<uint32_t>(value);
  w.barrier.arrive_and_wait();
  const float result = std::bit_cast<float>(w.slot[l ^ lane_mask][0]);
  w.barrier.arrive_and_wait();
  return result;
}

inline float atomicAdd(float* address, float value) {
  return std::atomic_ref<float>(*address).fetch_add(value);
}

inline float __int_as_float(unsigned bits) { return std::bit_cast<float>(bits); }

namespace tessera::cuda::detail {

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j..8j+7 give the addresses of the rows
// of matrix j; lane l gets in register j the elements (row l/4, columns 2(l%4), +1) of matrix j,
// or with .trans (rows 2(l%4), +1; column l/4), the lower element in the low half.
inline void ldmatrix_emulated(uint32_t (&r)[4], const void* p, bool trans) {
  emu::Warp& w = emu::warp();
  const int l = emu::lane();
  w.pointer[l] = p;
  w.barrier.arrive_and_wait();
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if (!trans) {
      const auto* row = static_cast<const uint16_t*>(w.pointer[8 * j + l / 4]);
      lo = row[2 * (l % 4)];
      hi = row[2 * (l % 4) + 1];
    } else {
      lo = static_cast<const uint16_t*>(w.pointer[8 * j + 2 * (l % 4)])[l / 4];
      hi = static_cast<const uint16_t*>(w.pointer[8 * j + 2 * (l % 4) + 1])[l / 4];
    }
    r[j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  w.barrier.arrive_and_wait();
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix_emulated(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix_emulated(r, p, true); }

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: fragments as in the PTX ISA (g = lane/4,
// t = lane%4): a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); b0 (k 2t.., n g),
// b1 (k 2t+8.., n g); c0, c1 (g, 2t, 2t+1), c2, c3 (g+8, 2t, 2t+1).
template <typename T>
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  emu::Warp& w = emu::warp();
  const int l = emu::lane();
  for (int i = 0; i < 4; ++i) w.slot[l][i] = a[i];
  w.slot[l][4] = b0;
  w.slot[l][5] = b1;
  w.barrier.arrive_and_wait();
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int i = 0; i < 4; ++i) {
      const uint32_t reg = w.slot[lane][i];
      A[rows[i]][cols[i]] = emu::bits_to_float(static_cast<uint16_t>(reg & 0xFFFF), kBf16);
      A[rows[i]][cols[i] + 1] = emu::bits_to_float(static_cast<uint16_t>(reg >> 16), kBf16);
    }
    for (int h = 0; h < 2; ++h) {
      const uint32_t reg = w.slot[lane][4 + h];
      B[2 * t + 8 * h][g] = emu::bits_to_float(static_cast<uint16_t>(reg & 0xFFFF), kBf16);
      B[2 * t + 8 * h + 1][g] = emu::bits_to_float(static_cast<uint16_t>(reg >> 16), kBf16);
    }
  }
  w.barrier.arrive_and_wait();
  const int g = l / 4, t = l % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i / 2) * 8, col = 2 * t + (i % 2);
    float sum = 0.f;
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    c[i] += sum;
  }
}

}  // namespace tessera::cuda::detail
