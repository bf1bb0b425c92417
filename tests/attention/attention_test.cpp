// tessera::attention against dense fp64 masked attention written in the test (see
// attention_test_util.h): every rule x lengths x head dims x batch/head counts, forward (output
// and log-sum-exp) and backward, on fresh random inputs.

#include "tessera/attention/attention.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

// The kernels' ATen adapters (internal to the library): the tests read their log-sum-exp.
#include "../../src/attention/backends/backend.h"
#include "attention/attention_test_util.h"

namespace tessera {
namespace {

using testing::all_close;
using testing::dense_attention;
using testing::make_mask_case;
using testing::MaskCase;
using testing::randn;

struct BatchHeads {
  int64_t b, h;
};

// Small lengths: both shapes for every head dim. At 680 and 1000 the fp64 dense reference costs
// L^2 per head, so the grid is covering rather than full: every head dim with (1, 1), and the
// smallest head dim also with B, H > 1 (what the kernel's (batch, head, tile) indexing needs).
std::vector<BatchHeads> batch_heads_for(int64_t length, int64_t head_dim) {
  if (length <= 65 || head_dim == 32) return {{1, 1}, {2, 3}};
  return {{1, 1}};
}

constexpr double kF32Atol = 1e-5, kF32Rtol = 1e-5;
constexpr double kBf16Atol = 2e-2, kBf16Rtol = 2e-2;

AttentionOptions with_backend(AttentionBackend backend) {
  AttentionOptions o;
  o.backend = backend;
  return o;
}

class AttentionRuleTest : public ::testing::TestWithParam<std::string> {};

// Forward, float32: the CPU kernel's output and log-sum-exp, and attention() with the cpu backend,
// against fp64 dense math on fp64 copies of the same inputs.
TEST_P(AttentionRuleTest, ForwardFloat32) {
  const std::string& name = GetParam();
  uint64_t seed = 100;
  for (int64_t length : {1, 7, 64, 65, 680, 1000}) {
    const MaskCase c = make_mask_case(name, length, seed++);
    for (int64_t d : {32, 64, 128}) {
      for (const BatchHeads bh : batch_heads_for(length, d)) {
        SCOPED_TRACE(fmt::format("{} L={} D={} B={} H={}", name, length, d, bh.b, bh.h));
        const at::Tensor q = randn({bh.b, bh.h, length, d}, seed++);
        const at::Tensor k = randn({bh.b, bh.h, length, d}, seed++);
        const at::Tensor v = randn({bh.b, bh.h, length, d}, seed++);
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        const testing::DenseAttention want = dense_attention(q.to(at::kDouble), k.to(at::kDouble),
                                                             v.to(at::kDouble), c.allowed, scale);

        const AttentionForward got = cpu::attention_forward(q, k, v, c.mask, scale);
        EXPECT_EQ(got.out.scalar_type(), at::kFloat);
        EXPECT_EQ(got.lse.scalar_type(), at::kFloat);
        EXPECT_TRUE(all_close(got.out, want.out, kF32Atol, kF32Rtol));
        EXPECT_TRUE(all_close(got.lse, want.lse, kF32Atol, kF32Rtol));
        if (d == 64) {
          const at::Tensor out = attention(q, k, v, c.mask, with_backend(AttentionBackend::cpu));
          EXPECT_TRUE(all_close(out, want.out, kF32Atol, kF32Rtol));
        }
      }
    }
  }
}

// Forward, bfloat16 inputs (float32 accumulation): against fp64 math on the bf16 values.
TEST_P(AttentionRuleTest, ForwardBFloat16) {
  const std::string& name = GetParam();
  uint64_t seed = 200;
  for (int64_t length : {7, 65, 680}) {
    const MaskCase c = make_mask_case(name, length, seed++);
    for (int64_t d : {32, 128}) {
      SCOPED_TRACE(fmt::format("{} L={} D={}", name, length, d));
      const at::Tensor q = randn({2, 2, length, d}, seed++, at::kBFloat16);
      const at::Tensor k = randn({2, 2, length, d}, seed++, at::kBFloat16);
      const at::Tensor v = randn({2, 2, length, d}, seed++, at::kBFloat16);
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      const testing::DenseAttention want = dense_attention(q.to(at::kDouble), k.to(at::kDouble),
                                                           v.to(at::kDouble), c.allowed, scale);
      const AttentionForward got = cpu::attention_forward(q, k, v, c.mask, scale);
      EXPECT_EQ(got.out.scalar_type(), at::kBFloat16);
      EXPECT_TRUE(all_close(got.out, want.out, kBf16Atol, kBf16Rtol));
      EXPECT_TRUE(all_close(got.lse, want.lse, 1e-3, 1e-3));  // lse is float32 from exact scores
      const at::Tensor out = attention(q, k, v, c.mask);      // automatic: the CPU kernel
      EXPECT_TRUE(all_close(out, want.out, kBf16Atol, kBf16Rtol));
    }
  }
}

struct Gradients {
  at::Tensor out, dq, dk, dv;
};

// attention(...).backward(grad) on float32 leaves.
Gradients tessera_gradients(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& grad, const BlockMask& mask,
                            const AttentionOptions& options) {
  at::Tensor ql = q.detach().clone().requires_grad_(true);
  at::Tensor kl = k.detach().clone().requires_grad_(true);
  at::Tensor vl = v.detach().clone().requires_grad_(true);
  at::Tensor out = attention(ql, kl, vl, mask, options);
  out.backward(grad);
  return {out.detach(), ql.grad(), kl.grad(), vl.grad()};
}

// fp64 autograd through the dense formula of the test.
Gradients dense_gradients(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& grad, const at::Tensor& allowed, double scale) {
  at::Tensor qd = q.detach().to(at::kDouble).requires_grad_(true);
  at::Tensor kd = k.detach().to(at::kDouble).requires_grad_(true);
  at::Tensor vd = v.detach().to(at::kDouble).requires_grad_(true);
  at::Tensor out = dense_attention(qd, kd, vd, allowed, scale).out;
  out.backward(grad.to(at::kDouble));
  return {out.detach(), qd.grad(), kd.grad(), vd.grad()};
}

void expect_gradients_close(const Gradients& got, const Gradients& want, double atol, double rtol) {
  EXPECT_TRUE(all_close(got.out, want.out, atol, rtol)) << "out";
  EXPECT_TRUE(all_close(got.dq, want.dq, atol, rtol)) << "dq";
  EXPECT_TRUE(all_close(got.dk, want.dk, atol, rtol)) << "dk";
  EXPECT_TRUE(all_close(got.dv, want.dv, atol, rtol)) << "dv";
}

constexpr double kGradAtol = 2e-5, kGradRtol = 1e-4;

// Backward through the cpu backend's autograd Function, float32 leaves.
TEST_P(AttentionRuleTest, BackwardFloat32) {
  const std::string& name = GetParam();
  uint64_t seed = 300;
  for (int64_t length : {1, 65, 680}) {
    const MaskCase c = make_mask_case(name, length, seed++);
    for (int64_t d : {32, 64, 128}) {
      const BatchHeads bh = length <= 65 ? BatchHeads{2, 3} : BatchHeads{1, 2};
      SCOPED_TRACE(fmt::format("{} L={} D={} B={} H={}", name, length, d, bh.b, bh.h));
      const at::Tensor q = randn({bh.b, bh.h, length, d}, seed++);
      const at::Tensor k = randn({bh.b, bh.h, length, d}, seed++);
      const at::Tensor v = randn({bh.b, bh.h, length, d}, seed++);
      const at::Tensor grad = randn({bh.b, bh.h, length, d}, seed++);
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      expect_gradients_close(
          tessera_gradients(q, k, v, grad, c.mask, with_backend(AttentionBackend::cpu)),
          dense_gradients(q, k, v, grad, c.allowed, scale), kGradAtol, kGradRtol);
    }
  }
}

// The reference backend (forward and its closed-form backward) and the fp64 path of automatic.
TEST_P(AttentionRuleTest, ReferenceBackend) {
  const std::string& name = GetParam();
  uint64_t seed = 400;
  for (int64_t length : {1, 7, 65}) {
    const MaskCase c = make_mask_case(name, length, seed++);
    const int64_t d = 16;  // any head dim: the reference has no kernel limits
    SCOPED_TRACE(fmt::format("{} L={} D={}", name, length, d));
    const at::Tensor q = randn({2, 3, length, d}, seed++, at::kDouble);
    const at::Tensor k = randn({2, 3, length, d}, seed++, at::kDouble);
    const at::Tensor v = randn({2, 3, length, d}, seed++, at::kDouble);
    const at::Tensor grad = randn({2, 3, length, d}, seed++, at::kDouble);
    const double scale = 0.3;
    AttentionOptions options;  // automatic: float64 goes to the reference
    options.scale = scale;
    const Gradients want = dense_gradients(q, k, v, grad, c.allowed, scale);
    expect_gradients_close(tessera_gradients(q, k, v, grad, c.mask, options), want, 1e-12, 1e-10);

    const AttentionForward ref = attention_reference(q, k, v, c.mask, scale);
    EXPECT_EQ(ref.lse.scalar_type(), at::kFloat);
    EXPECT_TRUE(all_close(ref.out, want.out, 1e-12, 1e-10));
    EXPECT_TRUE(all_close(ref.lse, dense_attention(q, k, v, c.allowed, scale).lse, 1e-5, 1e-6));

    // float32 through the reference backend.
    options.backend = AttentionBackend::reference;
    expect_gradients_close(tessera_gradients(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat),
                                             grad.to(at::kFloat), c.mask, options),
                           want, kGradAtol, kGradRtol);
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, AttentionRuleTest, ::testing::ValuesIn(testing::all_rule_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// A row that sees no key: output exactly 0, log-sum-exp -inf, zero gradient, no NaN anywhere.
TEST(Attention, RowsWithNoVisibleKey) {
  const int64_t length = 70, d = 32;
  std::vector<int64_t> begin(length, 0), end(length);
  for (int64_t q = 0; q < length; ++q) end[static_cast<size_t>(q)] = q + 1;
  for (int64_t q : {0, 3, 64, 69}) end[static_cast<size_t>(q)] = 0;  // empty rows
  const BlockMask mask = BlockMask::from_intervals(begin, end, length);
  at::Tensor dense_allowed = mask.to_dense();
  for (int64_t q : {1, 2, 5}) dense_allowed[q].fill_(false);
  const BlockMask dense = BlockMask::from_dense(dense_allowed);

  for (const auto& [m, empty_rows] :
       {std::pair<const BlockMask*, std::vector<int64_t>>{&mask, {0, 3, 64, 69}},
        std::pair<const BlockMask*, std::vector<int64_t>>{&dense, {0, 1, 2, 3, 5, 64, 69}}}) {
    for (AttentionBackend backend : {AttentionBackend::cpu, AttentionBackend::reference}) {
      SCOPED_TRACE(fmt::format("{} {}", to_string(m->rule()), to_string(backend)));
      const at::Tensor q = randn({2, 2, length, d}, 1);
      const at::Tensor k = randn({2, 2, length, d}, 2);
      const at::Tensor v = randn({2, 2, length, d}, 3);
      const at::Tensor grad = randn({2, 2, length, d}, 4);
      const Gradients g = tessera_gradients(q, k, v, grad, *m, with_backend(backend));
      for (const at::Tensor& t : {g.out, g.dq, g.dk, g.dv}) {
        EXPECT_FALSE(t.isnan().any().item<bool>());
      }
      for (int64_t row : empty_rows) {
        EXPECT_TRUE(g.out.select(2, row).eq(0).all().item<bool>()) << "row " << row;
        EXPECT_TRUE(g.dq.select(2, row).eq(0).all().item<bool>()) << "row " << row;
      }
      const AttentionForward f = backend == AttentionBackend::cpu
                                     ? cpu::attention_forward(q, k, v, *m, 0.1)
                                     : attention_reference(q, k, v, *m, 0.1);
      for (int64_t row : empty_rows) {
        EXPECT_TRUE(f.lse.select(2, row).isneginf().all().item<bool>()) << "row " << row;
      }
      EXPECT_FALSE(f.lse.isnan().any().item<bool>());
    }
  }
}

// Fewer queries than keys: a decoding step against a KV cache (causal_tail), and a VAR step's
// scale against every key so far (rows() of block_causal).
TEST(Attention, QueryLengthDiffersFromKeyLength) {
  struct Case {
    std::string label;
    BlockMask mask;
    at::Tensor allowed;
  };
  std::vector<Case> cases;
  for (auto [lq, lk] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 97}, {5, 97}, {64, 700}}) {
    at::Tensor allowed = at::zeros({lq, lk}, at::kBool);
    for (int64_t q = 0; q < lq; ++q) allowed[q].slice(0, 0, lk - lq + q + 1).fill_(true);
    cases.push_back(
        {fmt::format("causal_tail {}x{}", lq, lk), BlockMask::causal_tail(lq, lk), allowed});
  }
  const std::vector<int64_t> segs = testing::test_segments(680);
  const TokenLayout var(segs);
  const at::Tensor block_causal = testing::rule_mask(MaskRule::block_causal, segs);
  for (int64_t s : {0, 4, 9}) {
    const int64_t b = var.segment_begin(s), e = var.segment_end(s);
    cases.push_back({fmt::format("block_causal rows of scale {}", s),
                     BlockMask::block_causal(var).rows(b, e), block_causal.slice(0, b, e)});
  }
  uint64_t seed = 500;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    const int64_t lq = c.mask.query_length(), lk = c.mask.key_length(), d = 64;
    const at::Tensor q = randn({2, 3, lq, d}, seed++);
    const at::Tensor k = randn({2, 3, lk, d}, seed++);
    const at::Tensor v = randn({2, 3, lk, d}, seed++);
    const at::Tensor grad = randn({2, 3, lq, d}, seed++);
    const double scale = 0.125;
    const testing::DenseAttention want =
        dense_attention(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), c.allowed, scale);
    const AttentionForward got = cpu::attention_forward(q, k, v, c.mask, scale);
    EXPECT_TRUE(all_close(got.out, want.out, kF32Atol, kF32Rtol));
    EXPECT_TRUE(all_close(got.lse, want.lse, kF32Atol, kF32Rtol));
    expect_gradients_close(
        tessera_gradients(q, k, v, grad, c.mask, with_backend(AttentionBackend::cpu)),
        dense_gradients(q, k, v, grad, c.allowed, scale), kGradAtol, kGradRtol);
  }
}

// Non-contiguous inputs ([B, L, H, D] storage seen as [B, H, L, D]) and a custom scale.
TEST(Attention, NonContiguousInputsAndCustomScale) {
  const int64_t length = 65, d = 32;
  const MaskCase c = make_mask_case("block_causal", length);
  const at::Tensor q = randn({2, length, 3, d}, 1).transpose(1, 2);
  const at::Tensor k = randn({2, length, 3, d}, 2).transpose(1, 2);
  const at::Tensor v = randn({2, length, 3, d}, 3).transpose(1, 2);
  const at::Tensor grad = randn({2, length, 3, d}, 4).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  AttentionOptions options;
  options.scale = 0.7;
  expect_gradients_close(tessera_gradients(q, k, v, grad, c.mask, options),
                         dense_gradients(q, k, v, grad, c.allowed, 0.7), kGradAtol, kGradRtol);
}

// Keys and values read in place from slots [0, L) of larger [B, H, capacity, D] buffers, as a
// KV-cache decoding step passes them (Note [Strided heads]), and heads broadcast with stride 0:
// the same output and log-sum-exp as dense fp64 attention on contiguous copies, and the views
// pass through with_contiguous_rows uncopied.
TEST(Attention, StridedHeadsAreReadInPlace) {
  const int64_t length = 37, capacity = 64, d = 32;
  const MaskCase c = make_mask_case("causal", length);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(dtype == at::kFloat ? "float32" : "bfloat16");
    const at::Tensor q = randn({2, 3, length, d}, 11).to(dtype);
    const at::Tensor key_buffer = randn({2, 3, capacity, d}, 12).to(dtype);
    const at::Tensor value_buffer = randn({2, 1, capacity, d}, 13).to(dtype);
    const at::Tensor k = key_buffer.slice(2, 0, length);
    const at::Tensor v = value_buffer.slice(2, 0, length).expand({2, 3, length, d});
    ASSERT_FALSE(k.is_contiguous());
    ASSERT_EQ(v.stride(1), 0);
    ASSERT_TRUE(cpu::with_contiguous_rows(k).is_same(k));
    ASSERT_TRUE(cpu::with_contiguous_rows(v).is_same(v));
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const testing::DenseAttention want =
        dense_attention(q.to(at::kDouble), k.contiguous().to(at::kDouble),
                        v.contiguous().to(at::kDouble), c.allowed, scale);
    const double atol = dtype == at::kFloat ? kF32Atol : kBf16Atol;
    const double rtol = dtype == at::kFloat ? kF32Rtol : kBf16Rtol;
    const at::NoGradGuard no_grad;
    EXPECT_TRUE(
        all_close(attention(q, k, v, c.mask, with_backend(AttentionBackend::cpu)).to(at::kDouble),
                  want.out, atol, rtol));
    const AttentionForward got = cpu::attention_forward(q, k, v, c.mask, scale);
    EXPECT_TRUE(all_close(got.out.to(at::kDouble), want.out, atol, rtol));
    EXPECT_TRUE(all_close(got.lse.to(at::kDouble), want.lse, atol, rtol));
    // The reference backend takes the same views as they are (ATen math on any strides).
    EXPECT_TRUE(all_close(
        attention(q, k, v, c.mask, with_backend(AttentionBackend::reference)).to(at::kDouble),
        want.out, atol, rtol));
  }
  // A view whose rows are not contiguous (D apart is not the row stride) is copied first.
  const at::Tensor transposed = randn({2, length, 3, d}, 14).transpose(1, 2);
  EXPECT_FALSE(cpu::with_contiguous_rows(transposed).is_same(transposed));
  EXPECT_TRUE(cpu::with_contiguous_rows(transposed).is_contiguous());
}

// Gradients reach only the inputs that ask for them; without grad mode nothing is recorded.
TEST(Attention, GradModeAndPartialRequiresGrad) {
  const MaskCase c = make_mask_case("causal", 33);
  const at::Tensor q = randn({1, 2, 33, 32}, 1), k = randn({1, 2, 33, 32}, 2);
  at::Tensor v = randn({1, 2, 33, 32}, 3).requires_grad_(true);
  {
    c10::NoGradGuard no_grad;
    EXPECT_FALSE(attention(q, k, v, c.mask).requires_grad());
  }
  EXPECT_FALSE(attention(q, k, v.detach(), c.mask).requires_grad());
  at::Tensor out = attention(q, k, v, c.mask);
  ASSERT_TRUE(out.requires_grad());
  const at::Tensor grad = randn({1, 2, 33, 32}, 4);
  out.backward(grad);
  const Gradients want = dense_gradients(q, k, v, grad, c.allowed, 1 / std::sqrt(32.0));
  EXPECT_TRUE(all_close(v.grad(), want.dv, kGradAtol, kGradRtol));
}

// The mask outlives nothing: backward still works after the caller's BlockMask is gone.
TEST(Attention, BackwardAfterTheMaskIsDestroyed) {
  const at::Tensor q = randn({1, 1, 40, 32}, 1), k = randn({1, 1, 40, 32}, 2);
  const at::Tensor v = randn({1, 1, 40, 32}, 3);
  at::Tensor ql = q.clone().requires_grad_(true);
  at::Tensor out;
  {
    const BlockMask mask = BlockMask::block_diagonal(TokenLayout({10, 30}));
    out = attention(ql, k, v, mask);
  }
  const at::Tensor grad = randn({1, 1, 40, 32}, 4);
  out.backward(grad);
  const Gradients want = dense_gradients(
      q, k, v, grad, testing::rule_mask(MaskRule::block_diagonal, {10, 30}), 1 / std::sqrt(32.0));
  EXPECT_TRUE(all_close(ql.grad(), want.dq, kGradAtol, kGradRtol));
}

// bfloat16 leaves: gradients in bfloat16, loosely against fp64.
TEST(Attention, BackwardBFloat16) {
  const MaskCase c = make_mask_case("self_and_previous", 65);
  const at::Tensor q = randn({1, 2, 65, 64}, 1, at::kBFloat16);
  const at::Tensor k = randn({1, 2, 65, 64}, 2, at::kBFloat16);
  const at::Tensor v = randn({1, 2, 65, 64}, 3, at::kBFloat16);
  const at::Tensor grad = randn({1, 2, 65, 64}, 4, at::kBFloat16);
  const Gradients got = tessera_gradients(q, k, v, grad, c.mask, {});
  EXPECT_EQ(got.dq.scalar_type(), at::kBFloat16);
  expect_gradients_close(got, dense_gradients(q, k, v, grad, c.allowed, 1 / std::sqrt(64.0)), 5e-2,
                         5e-2);
}

// On a GPU, automatic runs float32 tensors through the dense reference there (the CUDA kernel
// takes bfloat16 / float16; tests/cuda covers it).
TEST(Attention, CudaTensorsUseTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const MaskCase c = make_mask_case("block_diagonal", 65);
  const at::Tensor q = randn({2, 3, 65, 64}, 1), k = randn({2, 3, 65, 64}, 2);
  const at::Tensor v = randn({2, 3, 65, 64}, 3), grad = randn({2, 3, 65, 64}, 4);
  const Gradients got = tessera_gradients(q.cuda(), k.cuda(), v.cuda(), grad.cuda(), c.mask, {});
  EXPECT_TRUE(got.out.is_cuda());
  expect_gradients_close(got, dense_gradients(q, k, v, grad, c.allowed, 0.125), kGradAtol,
                         kGradRtol);
}

}  // namespace
}  // namespace tessera
