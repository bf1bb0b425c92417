// The tiled CPU attention kernels (kernels/cpu) against dense float64 attention written here:
// forward (output and log-sum-exp) and backward, on fresh random inputs, for interval masks of
// every kind, a dense boolean mask, ragged lengths, query length != key length, rows that see no
// key, bfloat16 inputs, and tile sizes small enough that every tile / chunk boundary case occurs.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

// Internal headers of the library (not installed): the kernels' entry points and tile internals.
#include "../../kernels/cpu/attention_cpu.h"
#include "../../kernels/cpu/attention_tile.h"
#include "tessera/attention/block_mask.h"
#include "tessera/attention/token_layout.h"
#include "common/dense_attention.h"

namespace tessera {
namespace {

// The float64 reference: tests/common/dense_attention.h.
using Reference = test_support::DenseAttention;
constexpr auto dense_reference = test_support::dense_attention_float64;

// The mask as a dense boolean [Lq, Lk] tensor, from per-row intervals computed in the test.
at::Tensor intervals_to_dense(const std::vector<int64_t>& b, const std::vector<int64_t>& e,
                              int64_t lk) {
  at::Tensor m = at::zeros({static_cast<int64_t>(b.size()), lk}, at::kBool);
  for (size_t i = 0; i < b.size(); ++i) {
    if (b[i] < e[i]) m[static_cast<int64_t>(i)].slice(0, b[i], e[i]).fill_(true);
  }
  return m;
}

// Per-rule intervals over a layout, written independently of BlockMask.
at::Tensor rule_mask(MaskRule rule, const std::vector<int64_t>& segments, int64_t band = 0) {
  std::vector<int64_t> starts{0};
  for (int64_t s : segments) starts.push_back(starts.back() + s);
  const int64_t n = starts.back();
  std::vector<int64_t> b(n), e(n);
  for (size_t s = 0; s < segments.size(); ++s) {
    for (int64_t i = starts[s]; i < starts[s + 1]; ++i) {
      switch (rule) {
        case MaskRule::causal:
          b[i] = 0, e[i] = i + 1;
          break;
        case MaskRule::bidirectional:
          b[i] = 0, e[i] = n;
          break;
        case MaskRule::block_causal:
          b[i] = 0, e[i] = starts[s + 1];
          break;
        case MaskRule::block_diagonal:
          b[i] = starts[s], e[i] = starts[s + 1];
          break;
        case MaskRule::self_and_previous:
          b[i] = starts[s == 0 ? 0 : s - 1], e[i] = starts[s + 1];
          break;
        case MaskRule::banded:
          b[i] = std::max<int64_t>(0, i - band), e[i] = std::min(n, i + band + 1);
          break;
        case MaskRule::prefix_lm:
          b[i] = 0, e[i] = s == 0 ? starts[1] : i + 1;
          break;
        default:
          ADD_FAILURE() << "rule_mask: unsupported rule";
      }
    }
  }
  return intervals_to_dense(b, e, n);
}

// --- comparison --------------------------------------------------------------------------------

struct Tolerance {
  double atol, rtol;
};

// max |got - want| / (atol + rtol |want|) <= 1, with NaN anywhere a failure.
void expect_close(const at::Tensor& got_in, const at::Tensor& want, Tolerance tol,
                  const std::string& what) {
  const at::Tensor got = got_in.to(at::kDouble);
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_FALSE(got.isnan().any().item<bool>()) << what << ": NaN in the kernel's result";
  const double worst =
      ((got - want).abs() / (tol.atol + tol.rtol * want.abs())).max().item<double>();
  EXPECT_LE(worst, 1.0) << what << ": max |err| / (atol + rtol |want|) = " << worst
                        << ", max |err| = " << (got - want).abs().max().item<double>();
}

// lse: -inf exactly where the reference has -inf, close elsewhere.
void expect_lse(const at::Tensor& got_in, const at::Tensor& want, Tolerance tol,
                const std::string& what) {
  const at::Tensor got = got_in.to(at::kDouble);
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor want_empty = want.isinf(), got_empty = got.isinf();
  EXPECT_TRUE(got_empty.equal(want_empty)) << what << ": rows with lse = -inf differ";
  const at::Tensor finite = want_empty.logical_not();
  if (finite.any().item<bool>()) {
    expect_close(got.masked_select(finite), want.masked_select(finite), tol, what);
  }
}

struct Case {
  std::string name;
  int64_t batch, heads, lq, lk, dim;
  std::function<BlockMask()> mask;
  at::Tensor allowed;  // [Lq, Lk] bool, built by the test
};

// sizes: the tile sizes of both passes; none = the kernels' own (the public entry points).
void run_case(const Case& c, at::ScalarType dtype,
              std::optional<cpu::detail::TileSizes> sizes = std::nullopt) {
  SCOPED_TRACE(c.name + " " + c10::toString(dtype) + " tiles " +
               (sizes ? std::to_string(sizes->rows) + "x" + std::to_string(sizes->chunk) + "/" +
                            std::to_string(sizes->group)
                      : std::string("default")));
  at::manual_seed(1234);
  const auto opts = at::TensorOptions().dtype(dtype);
  const at::Tensor q = at::randn({c.batch, c.heads, c.lq, c.dim}, opts);
  const at::Tensor k = at::randn({c.batch, c.heads, c.lk, c.dim}, opts);
  const at::Tensor v = at::randn({c.batch, c.heads, c.lk, c.dim}, opts);
  const at::Tensor go = at::randn({c.batch, c.heads, c.lq, c.dim}, opts);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
  const BlockMask mask = c.mask();
  ASSERT_TRUE(mask.to_dense().equal(c.allowed)) << "the BlockMask disagrees with the test's mask";

  // The reference sees the same (bfloat16-rounded) inputs.
  const Reference want = dense_reference(q, k, v, go, c.allowed, scale);
  const bool bf16 = dtype == at::kBFloat16;
  const Tolerance fwd = bf16 ? Tolerance{1e-2, 1e-2} : Tolerance{5e-6, 5e-5};
  const Tolerance bwd = bf16 ? Tolerance{2e-2, 2e-2} : Tolerance{2e-5, 2e-4};

  const AttentionForward f =
      sizes ? cpu::detail::attention_forward_tiled(q, k, v, mask, scale, *sizes)
            : cpu::attention_forward(q, k, v, mask, scale);
  EXPECT_EQ(f.out.scalar_type(), dtype);
  EXPECT_EQ(f.lse.scalar_type(), at::kFloat);
  expect_close(f.out, want.out, fwd, "out");
  // lse is float32 whatever the input dtype: compare it against the reference computed from the
  // same inputs at float precision.
  expect_lse(f.lse, want.lse, Tolerance{1e-5, 1e-5}, "lse");

  const AttentionGradients g =
      sizes ? cpu::detail::attention_backward_tiled(q, k, v, f.out, f.lse, go, mask, scale, *sizes)
            : cpu::attention_backward(q, k, v, f.out, f.lse, go, mask, scale);
  EXPECT_EQ(g.dq.scalar_type(), dtype);
  expect_close(g.dq, want.dq, bwd, "dq");
  expect_close(g.dk, want.dk, bwd, "dk");
  expect_close(g.dv, want.dv, bwd, "dv");
}

const std::vector<int64_t> kPyramid{1, 4, 9, 16, 25, 36, 64};  // 155 tokens, VAR-like scales

std::vector<Case> cases() {
  std::vector<Case> cs;
  auto layout_case = [&](std::string name, MaskRule rule, std::vector<int64_t> segs, int64_t b,
                         int64_t h, int64_t d, std::function<BlockMask()> make, int64_t band = 0) {
    int64_t n = 0;
    for (int64_t s : segs) n += s;
    cs.push_back({std::move(name), b, h, n, n, d, std::move(make), rule_mask(rule, segs, band)});
  };
  const TokenLayout pyramid(kPyramid);
  layout_case("causal_65", MaskRule::causal, {65}, 1, 2, 32, [] { return BlockMask::causal(65); });
  layout_case("bidirectional_200", MaskRule::bidirectional, {200}, 2, 1, 64,
              [] { return BlockMask::bidirectional(200); });
  layout_case("block_causal", MaskRule::block_causal, kPyramid, 1, 2, 64,
              [=] { return BlockMask::block_causal(pyramid); });
  layout_case("block_diagonal", MaskRule::block_diagonal, kPyramid, 2, 1, 128,
              [=] { return BlockMask::block_diagonal(pyramid); });
  layout_case("self_and_previous", MaskRule::self_and_previous, kPyramid, 1, 2, 64,
              [=] { return BlockMask::self_and_previous(pyramid); });
  layout_case(
      "banded_5", MaskRule::banded, {300}, 1, 1, 32,
      [] { return BlockMask::banded(TokenLayout::single(300), 5); }, 5);
  layout_case("prefix_lm", MaskRule::prefix_lm, {17, 50}, 1, 2, 96, [] {
    return BlockMask::prefix_lm(TokenLayout({17, 50}));
  });
  layout_case("single_token", MaskRule::causal, {1}, 1, 3, 64, [] { return BlockMask::causal(1); });

  // A decoding step: 7 queries, the tail of 300 keys.
  {
    std::vector<int64_t> b(7, 0), e(7);
    for (int64_t i = 0; i < 7; ++i) e[i] = 300 - 7 + i + 1;
    cs.push_back({"causal_tail_7x300", 1, 2, 7, 300, 64,
                  [] { return BlockMask::causal_tail(7, 300); }, intervals_to_dense(b, e, 300)});
  }
  // User intervals, Lq != Lk, ragged, with rows that see no key (including the first and last).
  {
    const int64_t lq = 37, lk = 130;
    std::vector<int64_t> b(lq), e(lq);
    for (int64_t i = 0; i < lq; ++i) {
      b[i] = (i * 7) % 50;
      e[i] = b[i] + 1 + (i * 13) % 81;
    }
    b[0] = e[0] = 0;
    b[5] = e[5] = 60;
    b[lq - 1] = e[lq - 1] = lk;
    cs.push_back({"intervals_37x130_d256", 1, 2, lq, lk, 256,
                  [=] {
                    return BlockMask::from_intervals(b, e, lk, TokenLayout({10, 27}));
                  },
                  intervals_to_dense(b, e, lk)});
  }
  // A dense boolean mask with holes inside rows, a row with no key and a full column block.
  {
    const int64_t lq = 70, lk = 150;
    at::manual_seed(7);
    at::Tensor allowed = at::rand({lq, lk}).lt(0.6);
    allowed.slice(1, 20, 60).fill_(true);
    allowed[3].fill_(false);
    allowed[69].fill_(false);
    cs.push_back({"dense_70x150", 2, 1, lq, lk, 64, [=] { return BlockMask::from_dense(allowed); },
                  allowed});
  }
  return cs;
}

TEST(CpuAttentionKernel, MatchesFloat64ReferenceFloat32) {
  for (const Case& c : cases()) {
    run_case(c, at::kFloat);
    // Small tiles: many query tiles per segment, several chunks per region, ragged last chunks,
    // row groups in partial chunks (including groups of one row).
    run_case(c, at::kFloat, cpu::detail::TileSizes{16, 24, 4});
    run_case(c, at::kFloat, cpu::detail::TileSizes{5, 7, 1});
  }
}

TEST(CpuAttentionKernel, MatchesFloat64ReferenceBFloat16) {
  for (const Case& c : cases()) {
    run_case(c, at::kBFloat16);
    run_case(c, at::kBFloat16, cpu::detail::TileSizes{16, 24, 4});
  }
}

TEST(CpuAttentionKernel, VarPyramid680) {
  // VAR's 680-token pyramid: segments larger than a tile, key ranges spanning several chunks.
  const std::vector<int64_t> pn{1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  std::vector<int64_t> segs;
  for (int64_t p : pn) segs.push_back(p * p);
  const TokenLayout layout = TokenLayout::pyramid(pn);
  for (MaskRule rule : {MaskRule::block_causal, MaskRule::block_diagonal,
                        MaskRule::self_and_previous, MaskRule::causal}) {
    Case c{std::string("var680_") + to_string(rule),
           1,
           2,
           680,
           680,
           64,
           [=]() -> BlockMask {
             switch (rule) {
               case MaskRule::block_causal:
                 return BlockMask::block_causal(layout);
               case MaskRule::block_diagonal:
                 return BlockMask::block_diagonal(layout);
               case MaskRule::self_and_previous:
                 return BlockMask::self_and_previous(layout);
               default:
                 return BlockMask::causal(layout);
             }
           },
           rule_mask(rule, segs)};
    run_case(c, at::kFloat);
    run_case(c, at::kFloat, cpu::detail::TileSizes{64, 128, 16});
  }
}

TEST(CpuAttentionKernel, NoVisibleKeyGivesZeroAndNegativeInfinity) {
  // Every row sees nothing: out 0, lse -inf, gradients 0, no NaN.
  const int64_t lq = 9, lk = 20;
  const BlockMask mask =
      BlockMask::from_intervals(std::vector<int64_t>(lq, 4), std::vector<int64_t>(lq, 4), lk);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const auto opts = at::TensorOptions().dtype(dtype);
    const at::Tensor q = at::randn({1, 2, lq, 32}, opts), k = at::randn({1, 2, lk, 32}, opts);
    const at::Tensor v = at::randn({1, 2, lk, 32}, opts), go = at::randn({1, 2, lq, 32}, opts);
    const AttentionForward f = cpu::attention_forward(q, k, v, mask, 0.5);
    EXPECT_TRUE(f.out.eq(0).all().item<bool>());
    EXPECT_TRUE(f.lse.isneginf().all().item<bool>());
    const AttentionGradients g = cpu::attention_backward(q, k, v, f.out, f.lse, go, mask, 0.5);
    EXPECT_TRUE(g.dq.eq(0).all().item<bool>());
    EXPECT_TRUE(g.dk.eq(0).all().item<bool>());
    EXPECT_TRUE(g.dv.eq(0).all().item<bool>());
  }
}

TEST(CpuAttentionKernel, NonContiguousGradOutput) {
  // grad_out as autograd often delivers it: expanded from a scalar.
  const BlockMask mask = BlockMask::causal(40);
  const at::Tensor q = at::randn({1, 2, 40, 32}), k = at::randn({1, 2, 40, 32});
  const at::Tensor v = at::randn({1, 2, 40, 32});
  const at::Tensor go = at::ones({1}).expand({1, 2, 40, 32});
  const double scale = 0.3;
  const AttentionForward f = cpu::attention_forward(q, k, v, mask, scale);
  const AttentionGradients g = cpu::attention_backward(q, k, v, f.out, f.lse, go, mask, scale);
  const Reference want = dense_reference(q, k, v, go, rule_mask(MaskRule::causal, {40}), scale);
  expect_close(g.dq, want.dq, {1e-4, 1e-3}, "dq");
  expect_close(g.dk, want.dk, {1e-4, 1e-3}, "dk");
  expect_close(g.dv, want.dv, {1e-4, 1e-3}, "dv");
}

TEST(CpuAttentionKernel, TileGemmBothBackends) {
  // The row-major GEMM wrapper (BLAS when linked) and the Eigen fallback, every transpose
  // combination, against at::matmul in float64.
  using cpu::detail::Trans;
  at::manual_seed(3);
  const int64_t M = 13, N = 11, K = 7;
  for (Trans ta : {Trans::no, Trans::yes}) {
    for (Trans tb : {Trans::no, Trans::yes}) {
      const at::Tensor a = ta == Trans::yes ? at::randn({K, M}) : at::randn({M, K});
      const at::Tensor b = tb == Trans::yes ? at::randn({N, K}) : at::randn({K, N});
      const at::Tensor c0 = at::randn({M, N});
      const at::Tensor ad = ta == Trans::yes ? a.t() : a, bd = tb == Trans::yes ? b.t() : b;
      const at::Tensor want =
          at::matmul(ad.to(at::kDouble), bd.to(at::kDouble)) * 0.5 + c0.to(at::kDouble) * 1.0;
      for (int backend = 0; backend < 2; ++backend) {
        at::Tensor c = c0.clone();
        auto fn = backend == 0 ? cpu::detail::gemm : cpu::detail::gemm_eigen;
        fn(ta, tb, M, N, K, 0.5f, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(), b.size(1),
           1.f, c.data_ptr<float>(), N);
        expect_close(c, want, {1e-5, 1e-5}, backend == 0 ? "gemm" : "gemm_eigen");
      }
    }
  }
}

}  // namespace
}  // namespace tessera
