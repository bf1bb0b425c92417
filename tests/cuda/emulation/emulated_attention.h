#pragma once
// The CUDA attention kernels' own source run on the CPU through cuda_emulation.h, against float64
// attention computed here: forward (out, lse) and backward (delta, the key-block kernel, the dQ
// conversion) on small problems of every kind of mask the kernels distinguish: causal,
// block-diagonal and block-causal over ragged segments (tiles cut at segment boundaries, full
// chunks), random intervals with empty rows, a random dense mask (partial chunks with the dense
// rule), fewer queries than keys; each in bf16 and fp16 with head dims 64 and 128 (kVariants).
// Used by tests/cuda/emulated_kernels_test.cpp (ctest -L cuda) and
// tests/cuda/emulation/emulate_kernels.cpp (tests/cuda/emulation/run), both of which run every
// problem in every variant.
//
// The work lists are built here the way kernels/cuda/schedule.cpp builds them (that file is
// checked by tests/cuda/schedule_test.cpp), from query tiles cut at segment boundaries.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda_emulation.h"  // before the kernels

// The kernels, compiled as C++ (TESSERA_CUDA_EMULATION must be defined by the includer).
#include "../../../kernels/cuda/attention_backward.cu"
#include "../../../kernels/cuda/attention_forward.cu"

namespace tessera::cuda::emulation {

struct Problem {
  std::string name;
  int bh = 2, lq = 0, lk = 0;
  std::vector<int> segments;        // query tiles are cut at these boundaries (sum = lq)
  std::vector<int32_t> begin, end;  // row intervals
  std::vector<uint8_t> dense;       // [lq, lk] or empty
  bool allowed(int q, int k) const {
    if (k < begin[q] || k >= end[q]) return false;
    return dense.empty() || dense[static_cast<size_t>(q) * lk + k] != 0;
  }
};

struct Tile {
  int q0, q1, kb, ke, fb, fe;
};

inline std::vector<Tile> plan(const Problem& p) {
  std::vector<Tile> tiles;
  int start = 0;
  for (int seg : p.segments) {
    for (int q0 = start; q0 < start + seg; q0 += kTileRows) {
      const int q1 = std::min(start + seg, q0 + kTileRows);
      Tile t{q0, q1, p.lk, 0, 0, p.lk};
      bool any = false;
      for (int q = q0; q < q1; ++q) {
        // Bounds of the visible keys (dense: first and last visible).
        int lo = p.lk, hi = 0;
        for (int k = 0; k < p.lk; ++k) {
          if (p.allowed(q, k)) lo = std::min(lo, k), hi = std::max(hi, k + 1);
        }
        if (lo < hi) {
          any = true;
          t.kb = std::min(t.kb, lo);
          t.ke = std::max(t.ke, hi);
        }
      }
      if (!any) t.kb = t.ke = 0;
      // Full range: the longest run of keys every row allows.
      int best_b = 0, best_e = 0, run_b = 0;
      for (int k = 0; k <= p.lk; ++k) {
        bool all = k < p.lk && any;
        for (int q = q0; all && q < q1; ++q) all = p.allowed(q, k);
        if (!all) {
          if (k - run_b > best_e - best_b) best_b = run_b, best_e = k;
          run_b = k + 1;
        }
      }
      t.fb = best_b, t.fe = best_e;
      if (best_b >= best_e) t.fb = t.fe = t.kb;
      tiles.push_back(t);
    }
    start += seg;
  }
  return tiles;
}

inline void forward_lists(const std::vector<Tile>& tiles, std::vector<int32_t>& list,
                          std::vector<int32_t>& chunks) {
  for (const Tile& t : tiles) {
    const int c0 = static_cast<int>(chunks.size() / 4);
    auto region = [&](int r0, int r1, bool full) {
      const int len = r1 - r0;
      if (len <= 0) return;
      const int pieces = (len + kTileKeys - 1) / kTileKeys;
      for (int j = 0; j < pieces; ++j) {
        chunks.insert(chunks.end(),
                      {r0 + j * len / pieces, r0 + (j + 1) * len / pieces, full ? 1 : 0, 0});
      }
    };
    region(t.kb, t.fb, false);
    region(t.fb, t.fe, true);
    region(t.fe, t.ke, false);
    list.insert(list.end(), {t.q0, t.q1, c0, static_cast<int32_t>(chunks.size() / 4)});
  }
}

inline void backward_lists(const std::vector<Tile>& tiles, int lk, std::vector<int32_t>& blocks,
                           std::vector<int32_t>& entries) {
  for (int n0 = 0; n0 < lk; n0 += kTileKeys) {
    const int n1 = std::min(lk, n0 + kTileKeys);
    const int e0 = static_cast<int>(entries.size() / 4);
    for (const Tile& t : tiles) {
      if (t.kb >= t.ke || std::max(t.kb, n0) >= std::min(t.ke, n1)) continue;
      entries.insert(entries.end(), {t.q0, t.q1, (t.fb <= n0 && n1 <= t.fe) ? 1 : 0, 0});
    }
    blocks.insert(blocks.end(), {n0, n1, e0, static_cast<int32_t>(entries.size() / 4)});
  }
}

template <typename T>
T to_type(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(x);
  else
    return __float2half_rn(x);
}
template <typename T>
float from_type(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(x);
  else
    return __half2float(x);
}

inline double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-12);
}

struct Outcome {
  bool ok = false;
  std::string line;  // what was compared, and the errors
};

// One problem with dtype T and head dim D on fresh random inputs from `seed`.
template <typename T, int D>
Outcome run(const Problem& p, uint64_t seed) {
  const bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const int BH = p.bh, Lq = p.lq, Lk = p.lk;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  auto random = [&](size_t n) {
    std::vector<T> v(n);
    for (T& x : v) x = to_type<T>(normal(rng));
    return v;
  };
  const std::vector<T> q = random(static_cast<size_t>(BH) * Lq * D);
  const std::vector<T> k = random(static_cast<size_t>(BH) * Lk * D);
  const std::vector<T> v = random(static_cast<size_t>(BH) * Lk * D);
  const std::vector<T> go = random(static_cast<size_t>(BH) * Lq * D);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  // float64 reference.
  std::vector<double> out_ref(q.size()), lse_ref(static_cast<size_t>(BH) * Lq);
  std::vector<double> dq_ref(q.size(), 0), dk_ref(k.size(), 0), dv_ref(v.size(), 0);
  for (int b = 0; b < BH; ++b) {
    for (int i = 0; i < Lq; ++i) {
      std::vector<double> s(static_cast<size_t>(Lk), -INFINITY), pr(static_cast<size_t>(Lk), 0);
      double mx = -INFINITY;
      for (int j = 0; j < Lk; ++j) {
        if (!p.allowed(i, j)) continue;
        double dot = 0;
        for (int d = 0; d < D; ++d) {
          dot += from_type(q[(static_cast<size_t>(b) * Lq + i) * D + d]) *
                 from_type(k[(static_cast<size_t>(b) * Lk + j) * D + d]);
        }
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int j = 0; j < Lk; ++j) sum += p.allowed(i, j) ? std::exp(s[j] - mx) : 0;
      const size_t row = static_cast<size_t>(b) * Lq + i;
      lse_ref[row] = sum > 0 ? mx + std::log(sum) : -INFINITY;
      for (int j = 0; j < Lk; ++j)
        pr[j] = (sum > 0 && p.allowed(i, j)) ? std::exp(s[j] - mx) / sum : 0;
      std::vector<double> dp(static_cast<size_t>(Lk), 0);
      double delta = 0;
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int j = 0; j < Lk; ++j)
          o += pr[j] * from_type(v[(static_cast<size_t>(b) * Lk + j) * D + d]);
        out_ref[row * D + d] = o;
      }
      for (int j = 0; j < Lk; ++j) {
        for (int d = 0; d < D; ++d) {
          dp[j] +=
              from_type(go[row * D + d]) * from_type(v[(static_cast<size_t>(b) * Lk + j) * D + d]);
        }
        delta += pr[j] * dp[j];
      }
      for (int j = 0; j < Lk; ++j) {
        const double ds = pr[j] * (dp[j] - delta);
        const size_t krow = static_cast<size_t>(b) * Lk + j;
        for (int d = 0; d < D; ++d) {
          dq_ref[row * D + d] += scale * ds * from_type(k[krow * D + d]);
          dk_ref[krow * D + d] += scale * ds * from_type(q[row * D + d]);
          dv_ref[krow * D + d] += pr[j] * from_type(go[row * D + d]);
        }
      }
    }
  }

  // Forward through the emulated kernel.
  const std::vector<Tile> tiles = plan(p);
  std::vector<int32_t> tile_list, chunks;
  forward_lists(tiles, tile_list, chunks);
  std::vector<T> out(q.size(), to_type<T>(NAN));
  std::vector<float> lse(static_cast<size_t>(BH) * Lq, NAN);
  ForwardParams fp;
  fp.q = q.data(), fp.k = k.data(), fp.v = v.data(), fp.out = out.data(), fp.lse = lse.data();
  fp.batch_heads = BH, fp.lq = Lq, fp.lk = Lk, fp.head_dim = D;
  fp.scale = static_cast<float>(scale);
  fp.tiles = tile_list.data(), fp.num_tiles = static_cast<int32_t>(tile_list.size() / 4);
  fp.chunks = chunks.data();
  fp.mask.row_begin = p.begin.data(), fp.mask.row_end = p.end.data();
  fp.mask.dense = p.dense.empty() ? nullptr : p.dense.data();
  constexpr int kStride = detail::kRowStride<D>;
  emu::launch(dim3(static_cast<unsigned>(BH), static_cast<unsigned>(fp.num_tiles)), kThreads,
              (kTileRows + 2 * kTileKeys) * kStride * sizeof(T),
              [&] { detail::attention_forward_kernel<T, D>(fp); });

  // Backward: delta, dq_accum zeroed, key blocks, conversion.
  std::vector<float> delta(static_cast<size_t>(BH) * Lq, NAN);
  std::vector<float> dq_accum(q.size(), 0.f);
  std::vector<T> dq(q.size(), to_type<T>(NAN)), dk(k.size(), to_type<T>(NAN)),
      dv(v.size(), to_type<T>(NAN));
  const int64_t rows = static_cast<int64_t>(BH) * Lq;
  emu::launch(dim3(static_cast<unsigned>((rows + 3) / 4), 1), kThreads, 0, [&] {
    detail::attention_delta_kernel<T, D>(go.data(), out.data(), delta.data(), rows);
  });
  std::vector<int32_t> blocks, entries;
  backward_lists(tiles, Lk, blocks, entries);
  BackwardParams bp;
  bp.q = q.data(), bp.k = k.data(), bp.v = v.data(), bp.out = out.data(), bp.grad_out = go.data();
  bp.lse = lse.data(), bp.delta = delta.data(), bp.dq_accum = dq_accum.data();
  bp.dq = dq.data(), bp.dk = dk.data(), bp.dv = dv.data();
  bp.batch_heads = BH, bp.lq = Lq, bp.lk = Lk, bp.head_dim = D;
  bp.scale = static_cast<float>(scale);
  bp.key_blocks = blocks.data(), bp.num_key_blocks = static_cast<int32_t>(blocks.size() / 4);
  bp.entries = entries.data();
  bp.mask = fp.mask;
  const size_t backward_shared = (2 * kTileKeys + 2 * kTileRows) * kStride * sizeof(T) +
                                 2 * kTileRows * detail::kScoreStride * sizeof(T) +
                                 2 * kTileRows * sizeof(float);
  emu::launch(dim3(static_cast<unsigned>(BH), static_cast<unsigned>(bp.num_key_blocks)), kThreads,
              backward_shared, [&] { detail::attention_backward_kernel<T, D>(bp); });
  emu::launch(dim3(4, 1), 256, 0, [&] {
    detail::attention_convert_kernel<T>(dq_accum.data(), dq.data(),
                                        static_cast<int64_t>(dq.size()));
  });

  auto as_double = [](const std::vector<T>& x) {
    std::vector<double> r(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = from_type(x[i]);
    return r;
  };
  const double e_out = rel_error(as_double(out), out_ref);
  const double e_dq = rel_error(as_double(dq), dq_ref);
  const double e_dk = rel_error(as_double(dk), dk_ref);
  const double e_dv = rel_error(as_double(dv), dv_ref);
  double e_lse = 0;
  bool lse_inf_ok = true;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lse_ref[i])) {
      lse_inf_ok &= std::isinf(lse[i]) && lse[i] < 0;
    } else {
      e_lse = std::max(e_lse, std::abs(lse[i] - lse_ref[i]) / (1 + std::abs(lse_ref[i])));
    }
  }
  bool empty_rows_zero = true;
  for (int b = 0; b < BH; ++b) {
    for (int i = 0; i < Lq; ++i) {
      const size_t row = static_cast<size_t>(b) * Lq + i;
      if (!std::isinf(lse_ref[row])) continue;
      for (int d = 0; d < D; ++d) {
        empty_rows_zero &= from_type(out[row * D + d]) == 0.f && from_type(dq[row * D + d]) == 0.f;
      }
    }
  }
  const double tol_out = bf16 ? 1.5e-2 : 3e-3, tol_grad = bf16 ? 3e-2 : 6e-3;
  const bool ok = e_out <= tol_out && e_dq <= tol_grad && e_dk <= tol_grad && e_dv <= tol_grad &&
                  e_lse <= 1e-4 && lse_inf_ok && empty_rows_zero;
  char line[512];
  std::snprintf(line, sizeof line,
                "%-4s %-28s %s D=%-3d Lq=%-4d Lk=%-4d tiles=%-2d chunks=%-3d out %.1e lse %.1e dq "
                "%.1e dk %.1e dv %.1e%s%s",
                ok ? "ok" : "FAIL", p.name.c_str(), bf16 ? "bf16" : "fp16", D, Lq, Lk, fp.num_tiles,
                static_cast<int>(chunks.size() / 4), e_out, e_lse, e_dq, e_dk, e_dv,
                lse_inf_ok ? "" : " (lse -inf rows differ)",
                empty_rows_zero ? "" : " (rows without keys not 0)");
  return {ok, line};
}

inline std::vector<Problem> problems() {
  std::vector<Problem> ps;
  auto make = [](std::string name, int lq, int lk, std::vector<int> segs) {
    Problem p;
    p.name = std::move(name);
    p.lq = lq, p.lk = lk, p.segments = std::move(segs);
    p.begin.assign(static_cast<size_t>(lq), 0);
    p.end.assign(static_cast<size_t>(lq), 0);
    return p;
  };
  {
    Problem p = make("causal", 150, 150, {150});
    for (int i = 0; i < 150; ++i) p.end[i] = i + 1;
    ps.push_back(p);
  }
  {
    const std::vector<int> segs{1, 4, 9, 16, 25, 36, 59};
    Problem p = make("block_diagonal (segments)", 150, 150, segs);
    int start = 0;
    for (int s : segs) {
      for (int i = start; i < start + s; ++i) p.begin[i] = start, p.end[i] = start + s;
      start += s;
    }
    ps.push_back(p);
  }
  {
    const std::vector<int> segs{1, 4, 9, 16, 25, 36, 59};
    Problem p = make("block_causal (segments)", 150, 150, segs);
    int start = 0;
    for (int s : segs) {
      for (int i = start; i < start + s; ++i) p.begin[i] = 0, p.end[i] = start + s;
      start += s;
    }
    ps.push_back(p);
  }
  {
    Problem p = make("intervals with empty rows", 100, 150, {100});
    std::mt19937_64 rng(5);
    for (int i = 0; i < 100; ++i) {
      int a = static_cast<int>(rng() % 151), b = static_cast<int>(rng() % 151);
      if (a > b) std::swap(a, b);
      p.begin[i] = a, p.end[i] = (i % 7 == 3) ? a : b;
    }
    ps.push_back(p);
  }
  {
    Problem p = make("dense random", 90, 130, {90});
    std::mt19937_64 rng(6);
    p.dense.resize(static_cast<size_t>(90) * 130);
    for (int i = 0; i < 90; ++i) {
      int lo = 130, hi = 0;
      for (int j = 0; j < 130; ++j) {
        const bool a = i % 5 != 0 && (rng() % 10 < 4 || (j >= 20 && j < 90));
        p.dense[static_cast<size_t>(i) * 130 + j] = a ? 1 : 0;
        if (a) lo = std::min(lo, j), hi = std::max(hi, j + 1);
      }
      p.begin[i] = lo < hi ? lo : 0, p.end[i] = lo < hi ? hi : 0;
    }
    ps.push_back(p);
  }
  {
    Problem p = make("causal tail 37x150", 37, 150, {37});
    for (int i = 0; i < 37; ++i) p.end[i] = 150 - 37 + i + 1;
    ps.push_back(p);
  }
  return ps;
}

// The dtypes and head dims the kernels are instantiated for (src/attention/backends/cuda_backend.cpp).
struct Variant {
  bool bf16 = true;
  int head_dim = 64;
};
inline constexpr Variant kVariants[] = {{true, 64}, {true, 128}, {false, 64}, {false, 128}};

// The inputs' seed of problem i in variant v: one per case, the same in both runners.
inline uint64_t case_seed(size_t problem, size_t variant) {
  return 1 + problem * std::size(kVariants) + variant;
}

inline Outcome run(const Problem& p, Variant variant, uint64_t seed) {
  if (variant.bf16) {
    return variant.head_dim == 64 ? run<__nv_bfloat16, 64>(p, seed)
                                  : run<__nv_bfloat16, 128>(p, seed);
  }
  return variant.head_dim == 64 ? run<__half, 64>(p, seed) : run<__half, 128>(p, seed);
}

}  // namespace tessera::cuda::emulation
