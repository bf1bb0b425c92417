#pragma once
// The CUDA constructs the attention kernels use, emulated on the CPU, so that the kernels' own
// source (kernels/cuda/*.cu, compiled as C++ with TESSERA_CUDA_EMULATION) runs without a GPU: a
// block at a time, each CUDA thread a fiber (Note [Emulated threads are fibers]); __syncthreads is
// a barrier of the block's threads; the warp instructions (ldmatrix.x4[.trans], mma.sync.m16n8k16,
// __shfl_xor_sync) are computed from the 32 lanes' operands, exchanged through a per-warp area
// between two barriers of the warp. The instructions' semantics are this header's reading of the
// PTX ISA (the same as fragment_layout_test.cpp's); the emulation checks the kernels' logic
// (indexing, masking, online softmax, the backward pass's products and atomics), not the hardware.
// Slow: for small problems. Used by tests/cuda/emulated_kernels_test.cpp (ctest -L cuda) and
// tests/cuda/emulation/emulate_kernels.cpp (tests/cuda/emulation/run).
//
// Note [Emulated threads are fibers]
// The kernels' threads meet at a barrier every few instructions (each mma, ldmatrix and shuffle is
// two warp barriers). With one OS thread per CUDA thread, 128 of them on a 2-core machine, every
// barrier was a storm of futex wake-ups: more than half the run time was spent in the OS kernel,
// and the 14 cases tests/cuda/emulation/run had then took 58 s. Here a block's threads are fibers
// on the calling OS thread, switched only where a thread waits at a barrier (a few instructions
// on x86-64, below), and lane 0 alone multiplies an mma's operands: the same 14 cases take 3.5 s
// (both timings beside a build on the other core), with the same errors to the digits printed.
// A barrier means no more in CUDA than "every thread has arrived", so any order of running the
// threads between barriers is one the hardware may produce. The scheduler runs one warp at a time
// for as long as it can go on (until each of its threads waits at a __syncthreads), the warps and
// the lanes in a fresh pseudo-random order each time (fixed seed: runs are reproducible). Warps
// thus get as far ahead of each other as the barriers allow, in either order, so that a missing
// __syncthreads corrupts the result: deleting either the forward kernel's barrier before it loads
// the next chunk or one of the backward kernel's failed 11 and 12 to 14 of the 14 cases, where
// the OS threads, kept near lockstep by the warp barriers, passed the first. A barrier some threads
// never reach (a __syncthreads in divergent code) is reported and aborts instead of hanging.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>  // uint4, dim3 (host declarations only; nothing is linked)
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#define TESSERA_CUDA_EMULATION_HEADER 1
#define __launch_bounds__(...)
#define TESSERA_DYNAMIC_SHARED(name) unsigned char* name = ::emu::block_shared()
#define TESSERA_UNROLL

namespace emu {

struct Index3 {
  unsigned x = 0, y = 0, z = 0;
};

// --- fiber contexts ---------------------------------------------------------------------------
// On x86-64 a context switch is a few instructions (below): the callee-saved registers and the
// floating-point control words go onto the old stack, the stack pointer is swapped. Elsewhere,
// and where control-flow protection (shadow stacks) may be on, ucontext's swapcontext, which also
// sets the signal mask with a system call on every switch (5 times slower: 25 s instead of 4.5 s
// for the 24 cases of tests/cuda/emulation/run).
#if defined(__x86_64__) && !defined(__CET__)
#define TESSERA_EMU_FAST_SWITCH 1
// tessera_emu_switch(&from_sp, to_sp): saves the caller's context on its stack, stores the stack
// pointer in *from_sp, resumes the context saved at to_sp. Weak: defined by every program that
// includes this header, once each.
extern "C" void tessera_emu_switch(void** from_sp, void* to_sp);
asm(R"(
  .text
  .weak tessera_emu_switch
  .type tessera_emu_switch, @function
tessera_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr 8(%rsp)
  fldcw (%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tessera_emu_switch, .-tessera_emu_switch
)");
struct Context {
  void* sp = nullptr;
};
#else
struct Context {
  ucontext_t uc{};
};
#endif

// The fibers of the block being run, on the calling OS thread (Note [Emulated threads are
// fibers]).
struct Scheduler {
  Context main{};
  Context* current = nullptr;  // the running fiber's
  uint64_t arrivals = 0;       // barrier arrivals and finished fibers: progress
  bool finished = false;       // set by a fiber whose kernel has returned
  void (*invoke)(void*) = nullptr;
  void* kernel = nullptr;
};

inline thread_local Scheduler* scheduler = nullptr;

// Saves the running context in `from` and resumes `to`. (swapcontext returns twice, as setjmp
// does: it is kept out of its callers' frames, so that their locals need no volatile.)
[[gnu::noinline]] inline void switch_context(Context& from, Context& to) {
#ifdef TESSERA_EMU_FAST_SWITCH
  tessera_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// A fiber's first frame: runs the kernel, says so, and returns to the scheduler for good.
inline void fiber_main() {
  scheduler->invoke(scheduler->kernel);
  ++scheduler->arrivals;
  scheduler->finished = true;
#ifdef TESSERA_EMU_FAST_SWITCH
  Context done;
  switch_context(done, scheduler->main);  // never resumed
  std::abort();
#endif
}  // (ucontext: returns to the scheduler through uc_link)

// Makes `c` start fiber_main on the stack [stack, stack + bytes) when switched to.
[[gnu::noinline]] inline void start_context(Context& c, char* stack, size_t bytes, Context& link) {
#ifdef TESSERA_EMU_FAST_SWITCH
  (void)link;
  // What tessera_emu_switch pops: the control words (16 bytes), six registers, the address it
  // returns to (fiber_main), and a null return address for fiber_main, which leaves the stack
  // aligned as after a call.
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top - 80);
  std::memset(frame, 0, 80);
  uint32_t mxcsr = 0;
  uint16_t fpu = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu));
  std::memcpy(reinterpret_cast<char*>(frame), &fpu, sizeof fpu);
  std::memcpy(reinterpret_cast<char*>(frame) + 8, &mxcsr, sizeof mxcsr);
  frame[8] = reinterpret_cast<uint64_t>(&fiber_main);
  c.sp = frame;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = &link.uc;
  makecontext(&c.uc, &fiber_main, 0);
#endif
}

// Gives the OS thread back to the scheduler; the fiber continues when the scheduler next visits it.
inline void yield() { switch_context(*scheduler->current, scheduler->main); }

// std::barrier's arrive_and_wait for fibers: the last thread to arrive goes on, the others wait
// until it has.
class Barrier {
 public:
  explicit Barrier(int expected) : expected_(expected) {}
  void arrive_and_wait() {
    const uint64_t phase = phase_;
    ++scheduler->arrivals;
    if (++arrived_ == expected_) {
      arrived_ = 0;
      ++phase_;
      return;
    }
    while (phase_ == phase) yield();
  }

 private:
  int expected_;
  int arrived_ = 0;
  uint64_t phase_ = 0;
};

struct Warp {
  Barrier barrier{32};
  uint32_t slot[32][6] = {};
  const void* pointer[32] = {};
  float product[16][8] = {};  // mma's A·B
};

struct Block {
  explicit Block(size_t shared_bytes, int threads)
      : barrier(threads), shared(shared_bytes, 0xFF) {}  // 0xFFFF: a NaN in bf16 and fp16
  Barrier barrier;
  std::vector<unsigned char> shared;
  Warp warps[32];
};

inline thread_local Index3 thread_index, block_index, grid_dim, block_dim;
inline thread_local Block* current_block = nullptr;

inline unsigned char* block_shared() { return current_block->shared.data(); }
inline Warp& warp() { return current_block->warps[thread_index.x / 32]; }
inline int lane() { return static_cast<int>(thread_index.x % 32); }

// One emulated CUDA thread. The kernels' frames are a few KB (register arrays, the mma emulation's
// 1.5 KB of operands); a stack's pages are touched only as far as they are used.
inline constexpr size_t kStackBytes = 256 * 1024;
struct Fiber {
  Context context{};
  std::unique_ptr<char[]> stack = std::make_unique_for_overwrite<char[]>(kStackBytes);
  bool done = false;
};

// Runs kernel() for every block of `grid` (x fastest), each block's `threads` threads as fibers.
template <typename Kernel>
void launch(dim3 grid, int threads, size_t shared_bytes, Kernel&& kernel) {
  std::vector<Fiber> fibers(static_cast<size_t>(threads));
  const int warps = (threads + 31) / 32;
  std::vector<int> warp_order(static_cast<size_t>(warps)), lane_order(32);
  std::iota(warp_order.begin(), warp_order.end(), 0);
  std::iota(lane_order.begin(), lane_order.end(), 0);
  std::mt19937 shuffle(12345);
  Scheduler s;
  s.invoke = [](void* k) { (*static_cast<std::remove_reference_t<Kernel>*>(k))(); };
  s.kernel = static_cast<void*>(&kernel);
  Scheduler* const outer = std::exchange(scheduler, &s);
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      auto block = std::make_unique<Block>(shared_bytes + 16, threads);
      current_block = block.get();
      block_index = {bx, by, 0};
      grid_dim = {grid.x, grid.y, 1};
      block_dim = {static_cast<unsigned>(threads), 1, 1};
      for (Fiber& f : fibers) {
        f.done = false;
        start_context(f.context, f.stack.get(), kStackBytes, s.main);
      }
      int running = threads;
      while (running > 0) {
        const uint64_t pass_arrivals = s.arrivals;
        std::shuffle(warp_order.begin(), warp_order.end(), shuffle);
        for (int w : warp_order) {
          // This warp's threads run until none of them can go on (each waits at a __syncthreads
          // or has finished): one warp gets as far ahead of the others as the barriers allow.
          for (uint64_t before = ~s.arrivals; before != s.arrivals;) {
            before = s.arrivals;
            std::shuffle(lane_order.begin(), lane_order.end(), shuffle);
            for (int l : lane_order) {
              const int t = 32 * w + l;
              if (t >= threads || fibers[static_cast<size_t>(t)].done) continue;
              Fiber& f = fibers[static_cast<size_t>(t)];
              thread_index = {static_cast<unsigned>(t), 0, 0};
              s.current = &f.context;
              s.finished = false;
              switch_context(s.main, f.context);
              if (s.finished) {
                f.done = true;
                --running;
              }
            }
          }
        }
        if (running > 0 && s.arrivals == pass_arrivals) {
          std::fprintf(stderr,
                       "emulated CUDA: deadlock in block (%u, %u): %d threads wait at a "
                       "barrier that the others never reach\n",
                       bx, by, running);
          std::abort();
        }
      }
    }
  }
  current_block = nullptr;
  scheduler = outer;
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
  // Lane 0 multiplies the warp's operands once, between the barriers; each lane then takes its
  // four elements (the sums in the same order as a lane computing them alone).
  if (l == 0) {
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
    for (int row = 0; row < 16; ++row) {
      for (int col = 0; col < 8; ++col) {
        float sum = 0.f;
        for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
        w.product[row][col] = sum;
      }
    }
  }
  w.barrier.arrive_and_wait();
  const int g = l / 4, t = l % 4;
  for (int i = 0; i < 4; ++i) c[i] += w.product[g + (i / 2) * 8][2 * t + (i % 2)];
}

}  // namespace tessera::cuda::detail
