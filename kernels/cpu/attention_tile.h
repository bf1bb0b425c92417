#pragma once
// Internals shared by the CPU attention kernels (attention_forward.cpp, attention_backward.cpp):
// tile sizes, row-major GEMM wrappers, vectorised row operations, work distribution, dtype
// conversion. Not part of the library's interface.
//
// Note [CPU attention tiling]
// Both passes walk BlockMask::plan(rows): a query tile of m <= rows rows (cut at segment
// boundaries for block-structured masks) visits the keys [key_begin, key_end) that some row of it
// sees, in three regions: [key_begin, full_begin) and [full_end, key_end) are partial, and
// [full_begin, full_end) is full (every row sees every key). Each region is cut into chunks of at
// most `chunk` keys, so no chunk straddles a full/partial boundary. A full chunk is one block of
// m rows; a partial chunk is cut into groups of `group` rows, each narrowed to the keys its rows
// see in the chunk (skipped if none): on a causal diagonal chunk of 256 x 256, groups of 64 rows
// compute 62.5% of the products instead of 100% (50% is the triangle itself).
// Per block the forward pass computes S = (scale * log2 e) Q K^T with one GEMM into a float
// buffer, updates the online softmax per row (running max and sum in base 2, so each probability
// is one exp2 of a difference: the scale rides on the GEMM's alpha), and accumulates O += P V
// with a second GEMM after rescaling the O rows whose maximum rose. Masking in a partial block
// restricts each row to its visible interval [lo, hi) and writes P = 0 outside it: what setting
// the masked scores to -inf would give, without spending exp2 on them. The dense rule (an
// arbitrary boolean mask) does set masked scores to -inf, element by element, within each row's
// first..last visible key. Full blocks do no per-element mask work at all.
//
// Tile sizes (TileSizes in attention_kernels.h): larger tiles amortise the BLAS's packing of each
// operand and the per-chunk row bookkeeping, so the forward pass uses 256 x 512 (what ATen's own
// flash kernel uses for long sequences). Row groups in partial chunks pay off against no groups at
// all, and their size matters little; 64 rows. The backward pass keeps five products and two
// m x chunk buffers per block in cache, and 256-row tiles waste more on the diagonal, so it uses
// 128 x 512. The measurements behind these: docs/performance.md, "Kernel tuning measurements
// (moved from code comments)".
// Note [Tile GEMMs]
// The tile products go to the BLAS LibTorch was built with (MKL in the x86 wheels), through the
// Fortran sgemm_ symbol that libtorch_cpu exports: at::native::cpublas::gemm is not exported from
// the wheel's libtorch_cpu.so, and at::mm on wrapped tiles costs a dispatcher round trip per
// product. Eigen maps are the fallback when no BLAS is linked (sgemm_ is declared weak, so the
// library still links and runs against a BLAS-less LibTorch). With the project's build flags
// (-O3, no -march: Eigen gets SSE2 only) MKL's sgemm is several times faster on these tiles
// (Eigen built with AVX2 + FMA would be on par, but the library is not built that way).
// The products run inside the kernels' OpenMP team, where MKL's own threading does not nest, and
// each worker also pins MKL to one thread (SequentialBlas below), so there is no
// oversubscription: checked by counting the process's threads during a run (the OpenMP team
// only, before and after). Measurements: docs/performance.md (see above).

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TESSERA_ATTENTION_X86 1
#include <immintrin.h>
#endif

#include "attention_kernels.h"  // relative: tests include this header by path

// Fortran BLAS (column-major), as exported by libtorch_cpu (MKL) or whatever BLAS it links.
// Weak: a LibTorch without BLAS leaves it null and the kernels fall back to Eigen.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c, const int* ldc)
    __attribute__((weak));
// MKL's per-thread thread count (returns the previous one; 0 = follow the global setting). Weak:
// absent when LibTorch's BLAS is not MKL.
extern "C" int MKL_Set_Num_Threads_Local(int nth) __attribute__((weak));

namespace tessera::cpu::detail {

// bfloat16 storage: the upper 16 bits of a float32. Conversions as c10::BFloat16 does them (round
// to nearest even, NaN to the quiet NaN 0x7FC0), so the kernels' bits do not change with the type.
struct BFloat16 {
  uint16_t bits;
  BFloat16() = default;
  explicit BFloat16(float value) : bits(round_to_nearest_even(value)) {}
  explicit operator float() const { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

 private:
  static uint16_t round_to_nearest_even(float value) {
    if (std::isnan(value)) return UINT16_C(0x7FC0);
    const auto u = std::bit_cast<uint32_t>(value);
    const uint32_t rounding_bias = ((u >> 16) & 1) + UINT32_C(0x7FFF);
    return static_cast<uint16_t>((u + rounding_bias) >> 16);
  }
};
static_assert(sizeof(BFloat16) == 2);

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// --- GEMM on row-major tiles -----------------------------------------------------------------

enum class Trans : bool { no = false, yes = true };

// The same product with Eigen (defined in attention_forward.cpp, which keeps Eigen's headers out
// of this one): the fallback when no BLAS is linked.
void gemm_eigen(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Row-major C[M x N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; lda, ldb, ldc are row
// strides. beta == 0 ignores C's contents (it may be uninitialised). See Note [Tile GEMMs].
inline void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) c[j] = beta == 0.f ? 0.f : beta * c[j];
    }
    return;
  }
  if (sgemm_ != nullptr) {
    // A row-major matrix read column-major is its transpose, so row-major C = op(A) op(B) is
    // column-major C^T = op(B)^T op(A)^T: swap the operands and keep the flags.
    const char opa = ta == Trans::yes ? 'T' : 'N', opb = tb == Trans::yes ? 'T' : 'N';
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    sgemm_(&opb, &opa, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  gemm_eigen(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// --- row operations ------------------------------------------------------------------------------
//
// The softmax work per score (max, exp2, sum, and in the backward the dS product) is a fixed
// share of the cost next to the two 2*D-flop GEMM terms, so it is vectorised with AVX2 + FMA
// when the CPU has them (chosen at run time: the library is built for baseline x86-64), with a
// scalar fallback elsewhere.

#ifdef TESSERA_ATTENTION_X86
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

// 2^x for a vector: x = n + f with n = round(x), f in [-0.5, 0.5]; 2^f by its Taylor series
// (degree 7: truncation error below 1e-8, under float rounding), 2^n by adding n to the
// exponent bits. x < -126 gives 0 (so -inf gives 0); x is clamped at 127; NaN stays NaN.
__attribute__((target("avx2,fma"))) inline __m256 exp2_avx2(__m256 x) {
  const __m256 xc = _mm256_min_ps(_mm256_set1_ps(127.f), _mm256_max_ps(_mm256_set1_ps(-127.f), x));
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(xc, n);
  __m256 p = _mm256_set1_ps(1.5252733804059841e-05f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381606e-04f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 r = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-126.f), _CMP_LT_OQ), r);
}

__attribute__((target("avx2,fma"))) inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) inline float row_max_avx2(const float* x, int64_t n) {
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + j));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + j + 8));
  }
  for (; j + 8 <= n; j += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + j));
  m0 = _mm256_max_ps(m0, m1);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  float m = _mm_cvtss_f32(h);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

__attribute__((target("avx2,fma"))) inline float exp2_shift_sum_avx2(float* x, int64_t n,
                                                                     float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 p0 = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
    const __m256 p1 = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), s));
    _mm256_storeu_ps(x + j, p0);
    _mm256_storeu_ps(x + j + 8, p1);
    acc0 = _mm256_add_ps(acc0, p0);
    acc1 = _mm256_add_ps(acc1, p1);
  }
  for (; j + 8 <= n; j += 8) {
    const __m256 p = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
    _mm256_storeu_ps(x + j, p);
    acc0 = _mm256_add_ps(acc0, p);
  }
  float sum = hsum_avx2(_mm256_add_ps(acc0, acc1));
  for (; j < n; ++j) {
    x[j] = std::exp2(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

// dS = P * (dP - delta), in place over dP.
__attribute__((target("avx2,fma"))) inline void softmax_grad_avx2(float* dp, const float* p,
                                                                  int64_t n, float delta) {
  const __m256 d = _mm256_set1_ps(delta);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 g = _mm256_sub_ps(_mm256_loadu_ps(dp + j), d);
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), g));
  }
  for (; j < n; ++j) dp[j] = p[j] * (dp[j] - delta);
}

__attribute__((target("avx2,fma"))) inline float dot_avx2(const float* a, const float* b,
                                                          int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
  }
  float sum = hsum_avx2(acc);
  for (; j < n; ++j) sum += a[j] * b[j];
  return sum;
}
#endif  // TESSERA_ATTENTION_X86

// max of x[0, n); -inf for n == 0.
inline float row_max(const float* x, int64_t n) {
#ifdef TESSERA_ATTENTION_X86
  if (cpu_has_avx2()) return row_max_avx2(x, n);
#endif
  float m = kNegInf;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// x[j] = 2^(x[j] - shift) in place; returns the sum of the results.
inline float exp2_shift_sum(float* x, int64_t n, float shift) {
#ifdef TESSERA_ATTENTION_X86
  if (cpu_has_avx2()) return exp2_shift_sum_avx2(x, n, shift);
#endif
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp2(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

inline void softmax_grad(float* dp, const float* p, int64_t n, float delta) {
#ifdef TESSERA_ATTENTION_X86
  if (cpu_has_avx2()) return softmax_grad_avx2(dp, p, n, delta);
#endif
  for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - delta);
}

inline float dot(const float* a, const float* b, int64_t n) {
#ifdef TESSERA_ATTENTION_X86
  if (cpu_has_avx2()) return dot_avx2(a, b, n);
#endif
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

inline void scale_row(float* x, int64_t n, float a) {
  for (int64_t j = 0; j < n; ++j) x[j] *= a;
}

inline void zero(float* x, int64_t n) {
  if (n > 0) std::memset(x, 0, static_cast<size_t>(n) * sizeof(float));
}

// --- dtype conversion ----------------------------------------------------------------------------

// A float32 view of n contiguous elements: the data itself for float, else converted into `buf`
// (each bfloat16 tile is converted once, then every product reads float32).
template <typename T>
const float* as_float(const T* src, int64_t n, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    (void)n;
    (void)buf;
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(src[i]);
    return buf;
  }
}

template <typename T>
void store(const float* src, int64_t n, T* dst) {
  if constexpr (std::is_same_v<T, float>) {
    if (src != dst && n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// --- key chunks ----------------------------------------------------------------------------------

// Calls visit(c0, c1, full) for the chunks of a query tile's keys: the partial region before the
// full one, the full region, the partial region after it, each cut into chunks of at most `chunk`
// keys of near-equal width. See Note [CPU attention tiling].
template <typename Visit>
void for_each_key_chunk(const QueryTile& tile, int64_t chunk, Visit&& visit, int64_t keys_begin = 0,
                        int64_t keys_end = std::numeric_limits<int64_t>::max()) {
  // Optionally restricted to keys [keys_begin, keys_end) (a backward task's key range).
  const int64_t kb = std::max(tile.key_begin, keys_begin);
  const int64_t ke = std::max(kb, std::min(tile.key_end, keys_end));
  const int64_t fb = std::clamp(tile.full_begin, kb, ke);
  const int64_t fe = std::clamp(tile.full_end, fb, ke);
  auto region = [&](int64_t r0, int64_t r1, bool full) {
    const int64_t len = r1 - r0;
    if (len <= 0) return;
    const int64_t pieces = (len + chunk - 1) / chunk;
    for (int64_t i = 0; i < pieces; ++i) {
      visit(r0 + i * len / pieces, r0 + (i + 1) * len / pieces, full);
    }
  };
  region(kb, fb, false);
  region(fb, fe, true);
  region(fe, ke, false);
}

// The visible columns [lo, hi) of query row q within the chunk [c0, c0 + n): the row's interval
// clipped to the chunk (for the dense rule, its first and last visible key).
inline void row_window(const MaskView& mask, int64_t q, int64_t c0, int64_t n, int64_t& lo,
                       int64_t& hi) {
  lo = std::clamp<int64_t>(mask.row_begin[q] - c0, 0, n);
  hi = std::clamp<int64_t>(mask.row_end[q] - c0, lo, n);
}

// Calls block(r0, r1, b0, b1, full) for the work of one key chunk [c0, c1) of the query tile whose
// rows are [q0, q0 + m): rows r0..r1 (tile-relative) against keys [b0, b1). A full chunk is one
// block. A partial chunk is cut into groups of `group` rows, each narrowed to the keys some row
// of it sees within the chunk and skipped when it sees none: on the causal diagonal this halves
// the wasted products as the groups get smaller (see Note [CPU attention tiling]).
template <typename Block>
void for_each_block(const MaskView& mask, int64_t q0, int64_t m, int64_t c0, int64_t c1, bool full,
                    int64_t group, Block&& block) {
  if (full) {
    block(int64_t{0}, m, c0, c1, true);
    return;
  }
  const int64_t n = c1 - c0;
  for (int64_t r0 = 0; r0 < m; r0 += group) {
    const int64_t r1 = std::min(m, r0 + group);
    int64_t lo_min = n, hi_max = 0;
    for (int64_t i = r0; i < r1; ++i) {
      int64_t lo, hi;
      row_window(mask, q0 + i, c0, n, lo, hi);
      if (lo < hi) {
        lo_min = std::min(lo_min, lo);
        hi_max = std::max(hi_max, hi);
      }
    }
    if (lo_min < hi_max) block(r0, r1, c0 + lo_min, c0 + hi_max, false);
  }
}

// Dense rule: scores of keys the boolean mask forbids become -inf within [lo, hi).
inline void apply_dense_mask(const bool* allowed_row, float* s, int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) {
    if (!allowed_row[j]) s[j] = kNegInf;
  }
}

// --- work distribution ---------------------------------------------------------------------------
//
// Note [Kernels need OpenMP]
// The kernels run their tasks on an OpenMP team of their own (#pragma omp parallel), so their
// sources must be compiled with OpenMP (CMake gives kernels/cpu/*.cpp the flag; GCC's -fopenmp
// links libgomp.so.1, the same soname as the copy in the torch wheel, so one OpenMP runtime and one
// thread pool serve ATen and Tessera). Without it the pragmas are ignored: the kernels are correct
// but use one core, and MKL, seeing no parallel region, threads each small tile product itself,
// which on a loaded machine was far slower still; warn_serial_build() says so once.

// Keeps MKL on the calling thread while a kernel's worker runs: every tile product is small, and
// the parallelism is across tiles. Inside the kernels' OpenMP team MKL would not nest anyway, but
// where the tasks run on the caller (one task, a nested call, or a build without OpenMP) MKL would
// otherwise start its own team for each product (several times slower per product on busy cores).
class SequentialBlas {
 public:
  SequentialBlas()
      : previous_(MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~SequentialBlas() {
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(previous_);
  }
  SequentialBlas(const SequentialBlas&) = delete;
  SequentialBlas& operator=(const SequentialBlas&) = delete;

 private:
  int previous_;
};

// Logs once that the kernels run on one thread (see Note [Kernels need OpenMP]).
void warn_serial_build();

// Calls body(i) for i in [0, n) on `workers` threads of an OpenMP team, at most one call per
// thread, or on the calling thread alone when workers <= 1, inside a parallel region already, or
// without OpenMP; rethrows the first exception a call threw. The team is the calling thread's
// default size (what at::get_num_threads() reports after LibTorch's initialisation), as
// at::parallel_for would start it; a call with i >= the team size is not made, so `body` must not
// rely on every i running (run_tasks hands out work dynamically for that reason).
template <typename Body>
void parallel_workers(int64_t workers, bool allow_parallel, Body&& body) {
  if (workers <= 0) return;
#ifdef _OPENMP
  if (workers > 1 && allow_parallel && !omp_in_parallel()) {
    std::exception_ptr error;
    std::atomic_flag failed = ATOMIC_FLAG_INIT;
#pragma omp parallel
    {
      const int64_t tid = omp_get_thread_num();
      if (tid < workers) {
        try {
          body(tid);
        } catch (...) {
          if (!failed.test_and_set()) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#else
  (void)allow_parallel;
#endif
  body(int64_t{0});
}

// Runs run(task, scratch) for every task in [0, num_tasks), ordered by the caller from the most
// to the least expensive, on up to threads.num_threads threads. Each thread takes the next task
// from a shared counter rather than a fixed contiguous share: tile costs differ widely under
// causal and block masks, and on a machine shared with other work one core may fall behind, so
// dynamic hand-out keeps both cores busy to the end. Every task's result is its own, so which
// thread runs it does not change a bit. `make_scratch` builds one thread's buffers.
template <typename MakeScratch, typename Run>
void run_tasks(int64_t num_tasks, const Threads& threads, MakeScratch&& make_scratch, Run&& run) {
  if (num_tasks <= 0) return;
#ifndef _OPENMP
  if (threads.num_threads > 1) warn_serial_build();
#endif
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(std::max(threads.num_threads, 1), num_tasks);
  parallel_workers(workers, threads.allow_parallel, [&](int64_t) {
    const SequentialBlas sequential_blas;
    auto scratch = make_scratch();
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < num_tasks;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      run(t, scratch);
    }
  });
}

}  // namespace tessera::cpu::detail
