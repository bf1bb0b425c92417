// The CUDA attention kernels (kernels/cuda) against dense float64 attention written here, the
// cases of the CPU kernel's tests: every mask rule, ragged lengths (1, 7, 64, 65, 200, 680), query
// length != key length, rows that see no key, non-contiguous and misaligned inputs; forward (out
// and log-sum-exp) and backward (dq, dk, dv through tessera::attention's autograd); bfloat16 and
// float16; head dims 64 and 128. Fresh random inputs per case; outputs land in memory the caching
// allocator had just filled with NaN, so an element the kernel fails to write shows up.
// Without a GPU every test here skips with a message (the kernels are still compiled and linked;
// a GPU is not a prerequisite CI can have, so this stays a skip even under TESSERA_REQUIRE_ALL);
// the errors for unsupported head dims and dtypes are checked everywhere.

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../../src/attention/backends/backend.h"
#include "attention/attention_test_util.h"
#include "common/dense_attention.h"
#include "common/prerequisite.h"
#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"
#include "tessera/core/error.h"

namespace tessera {
namespace {

using testing::make_mask_case;
using testing::MaskCase;
using testing::randn;

#ifdef TESSERA_WITH_CUDA
#define TESSERA_SKIP_WITHOUT_GPU()                                                      \
  do {                                                                                  \
    if (!at::hasCUDA()) {                                                               \
      GTEST_SKIP() << "no CUDA device: the CUDA kernels are compiled and linked, but "  \
                      "not run here";                                                   \
    }                                                                                   \
  } while (false)
#else
#define TESSERA_SKIP_WITHOUT_GPU()                                                      \
  TESSERA_SKIP_FOR_MISSING("nvcc: this build has no CUDA kernels (the CUDA toolkit was not " \
                           "found at configure time)")
#endif

AttentionOptions cuda_backend(double scale) {
  AttentionOptions o;
  o.backend = AttentionBackend::cuda;
  o.scale = scale;
  return o;
}

// The float64 reference: tests/common/dense_attention.h.
using Expected = test_support::DenseAttention;
constexpr auto dense_reference = test_support::dense_attention_float64;

// ||got - want|| <= tol ||want|| (Frobenius), no NaN or inf in `got`.
::testing::AssertionResult relative_error_within(const at::Tensor& got_in, const at::Tensor& want,
                                                 double tol, const std::string& what) {
  const at::Tensor got = got_in.to(at::kDouble).to(want.device());
  if (got.sizes() != want.sizes()) {
    return ::testing::AssertionFailure() << what << ": shape " << got.sizes() << " != "
                                         << want.sizes();
  }
  if (!got.isfinite().all().item<bool>()) {
    return ::testing::AssertionFailure()
           << what << ": " << got.isfinite().logical_not().sum().item<int64_t>()
           << " non-finite elements (NaN: unwritten or 0/0)";
  }
  const double err = (got - want).norm().item<double>();
  const double ref = want.norm().item<double>();
  if (err > tol * std::max(ref, 1e-12)) {
    return ::testing::AssertionFailure()
           << what << ": ||got - want|| / ||want|| = " << err / std::max(ref, 1e-12)
           << " > " << tol << " (max abs diff " << (got - want).abs().max().item<double>() << ")";
  }
  return ::testing::AssertionSuccess();
}

struct Tolerance {
  double out, grad;
};
[[maybe_unused]] Tolerance tolerance(at::ScalarType dtype) {
  // bfloat16 rounding is 2^-9 relative, float16 2^-12; P and dS are rounded to the dtype before
  // their products (as in FlashAttention), the outputs once more.
  return dtype == at::kBFloat16 ? Tolerance{1.5e-2, 3e-2} : Tolerance{3e-3, 6e-3};
}

// Fills the caching allocator's free blocks of these sizes with NaN, so that the next
// allocations of those sizes (the kernel's outputs) start as NaN rather than as an earlier
// result.
[[maybe_unused]] void poison_allocator(const std::vector<int64_t>& float_counts, const at::Device& device) {
  std::vector<at::Tensor> blocks;
  for (const int64_t n : float_counts) {
    blocks.push_back(at::full({std::max<int64_t>(n, 1)}, std::nan(""),
                              at::TensorOptions().dtype(at::kFloat).device(device)));
  }
}

// One case: forward through the kernel entry point (out, lse), backward through
// tessera::attention's autograd on the cuda backend, all against float64; bfloat16 also against
// the CPU kernel.
void run_case(const std::string& label, const BlockMask& mask, const at::Tensor& allowed,
              int64_t batch, int64_t heads, int64_t dim, at::ScalarType dtype, uint64_t seed,
              double scale) {
#ifdef TESSERA_WITH_CUDA
  SCOPED_TRACE(fmt::format("{} B={} H={} D={} {}", label, batch, heads, dim,
                           c10::toString(dtype)));
  const int64_t lq = mask.query_length(), lk = mask.key_length();
  const at::Device gpu(at::kCUDA);
  const at::Tensor q = randn({batch, heads, lq, dim}, seed, dtype).to(gpu);
  const at::Tensor k = randn({batch, heads, lk, dim}, seed + 1, dtype).to(gpu);
  const at::Tensor v = randn({batch, heads, lk, dim}, seed + 2, dtype).to(gpu);
  const at::Tensor go = randn({batch, heads, lq, dim}, seed + 3, dtype).to(gpu);
  const Expected want = dense_reference(q, k, v, go, allowed, scale);
  const Tolerance tol = tolerance(dtype);
  const at::Tensor empty_rows = allowed.any(-1).logical_not().to(gpu);  // [Lq]

  // Forward.
  poison_allocator({batch * heads * lq * dim / 2, batch * heads * lq}, gpu);
  const AttentionForward f = cuda::attention_forward(q, k, v, mask, scale);
  ASSERT_EQ(f.out.scalar_type(), dtype);
  ASSERT_EQ(f.lse.scalar_type(), at::kFloat);
  ASSERT_TRUE(f.out.is_cuda());
  EXPECT_TRUE(relative_error_within(f.out, want.out, tol.out, "out"));
  const at::Tensor lse = f.lse.to(at::kDouble);
  EXPECT_TRUE(lse.isneginf().equal(want.lse.isneginf())) << "rows with lse = -inf differ";
  EXPECT_FALSE(lse.isnan().any().item<bool>()) << "NaN in lse";
  const at::Tensor finite = want.lse.isfinite();
  if (finite.any().item<bool>()) {
    const at::Tensor diff = (lse.masked_select(finite) - want.lse.masked_select(finite)).abs();
    const at::Tensor bound = want.lse.masked_select(finite).abs() * 1e-3 + 1e-3;
    EXPECT_TRUE(diff.le(bound).all().item<bool>())
        << "lse: max abs diff " << diff.max().item<double>();
  }
  if (empty_rows.any().item<bool>()) {
    EXPECT_TRUE(f.out.index_select(2, empty_rows.nonzero().squeeze(1)).eq(0).all().item<bool>())
        << "rows that see no key must give 0";
  }
  if (dtype == at::kBFloat16) {
    const AttentionForward cpu_f =
        cpu::attention_forward(q.cpu(), k.cpu(), v.cpu(), mask, scale);
    EXPECT_TRUE(relative_error_within(f.out, cpu_f.out.to(at::kDouble).to(gpu), tol.out,
                                      "out against the CPU kernel"));
  }

  // Backward through autograd on the cuda backend.
  at::Tensor ql = q.clone().requires_grad_(true);
  at::Tensor kl = k.clone().requires_grad_(true);
  at::Tensor vl = v.clone().requires_grad_(true);
  const at::Tensor out = attention(ql, kl, vl, mask, cuda_backend(scale));
  EXPECT_TRUE(out.detach().equal(f.out)) << "the autograd path's forward differs from the kernel's";
  poison_allocator({batch * heads * lq * dim, batch * heads * lk * dim / 2,
                    batch * heads * lk * dim / 2, batch * heads * lq},
                   gpu);
  out.backward(go);
  ASSERT_TRUE(ql.grad().defined() && kl.grad().defined() && vl.grad().defined());
  EXPECT_EQ(ql.grad().scalar_type(), dtype);
  EXPECT_TRUE(relative_error_within(ql.grad(), want.dq, tol.grad, "dq"));
  EXPECT_TRUE(relative_error_within(kl.grad(), want.dk, tol.grad, "dk"));
  EXPECT_TRUE(relative_error_within(vl.grad(), want.dv, tol.grad, "dv"));
  if (empty_rows.any().item<bool>()) {
    EXPECT_TRUE(
        ql.grad().index_select(2, empty_rows.nonzero().squeeze(1)).eq(0).all().item<bool>())
        << "rows that see no key get no gradient";
  }
#else
  (void)label, (void)mask, (void)allowed, (void)batch, (void)heads, (void)dim, (void)dtype,
      (void)seed, (void)scale;
#endif
}

class CudaAttentionRuleTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaAttentionRuleTest, MatchesFloat64Reference) {
  TESSERA_SKIP_WITHOUT_GPU();
  const std::string& name = GetParam();
  uint64_t seed = 1000;
  for (const int64_t length : {1, 7, 64, 65, 200, 680}) {
    const MaskCase c = make_mask_case(name, length, seed++);
    ASSERT_TRUE(c.mask.to_dense().equal(c.allowed));
    const int64_t batch = length <= 200 ? 2 : 1, heads = length <= 200 ? 3 : 2;
    for (const int64_t dim : {64, 128}) {
      for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
        run_case(fmt::format("{} L={}", name, length), c.mask, c.allowed, batch, heads, dim,
                 dtype, seed, 1.0 / std::sqrt(static_cast<double>(dim)));
        seed += 4;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, CudaAttentionRuleTest,
                         ::testing::ValuesIn(testing::all_rule_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// The VAR pyramid of 2240 tokens (segments up to 32 x 32 = 1024 rows: many tiles per segment, key
// ranges of many chunks) with the block rules.
TEST(CudaAttention, VarPyramid2240) {
  TESSERA_SKIP_WITHOUT_GPU();
  const std::vector<int64_t>& pn = testing::var_patch_nums_2240();
  std::vector<int64_t> segs;
  for (const int64_t p : pn) segs.push_back(p * p);
  const TokenLayout layout = TokenLayout::pyramid(pn);
  uint64_t seed = 5000;
  for (const MaskRule rule : {MaskRule::block_causal, MaskRule::block_diagonal, MaskRule::causal}) {
    const BlockMask mask = rule == MaskRule::block_causal     ? BlockMask::block_causal(layout)
                           : rule == MaskRule::block_diagonal ? BlockMask::block_diagonal(layout)
                                                              : BlockMask::causal(layout);
    run_case(fmt::format("var2240 {}", to_string(rule)), mask,
             testing::rule_mask(rule, segs), 1, 2, 128, at::kBFloat16, seed, 0.0884);
    seed += 4;
  }
}

// Fewer queries than keys: a decoding step (causal_tail) and one VAR scale against every key so
// far (rows() of block_causal).
TEST(CudaAttention, QueryLengthDiffersFromKeyLength) {
  TESSERA_SKIP_WITHOUT_GPU();
  uint64_t seed = 6000;
  for (auto [lq, lk] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 97}, {5, 97}, {64, 700}}) {
    const BlockMask mask = BlockMask::causal_tail(lq, lk);
    run_case(fmt::format("causal_tail {}x{}", lq, lk), mask, mask.to_dense(), 2, 3, 64,
             at::kBFloat16, seed, 0.125);
    seed += 4;
  }
  const std::vector<int64_t> segs = testing::test_segments(680);
  const TokenLayout var(segs);
  for (const int64_t s : {0, 4, 9}) {
    const BlockMask mask =
        BlockMask::block_causal(var).rows(var.segment_begin(s), var.segment_end(s));
    run_case(fmt::format("block_causal rows of scale {}", s), mask, mask.to_dense(), 2, 3, 128,
             at::kHalf, seed, 0.09);
    seed += 4;
  }
}

// [B, L, H, D] storage seen as [B, H, L, D], and a view that starts 2 bytes past an allocation
// (the adapter copies what the kernels' 16-byte loads cannot read).
TEST(CudaAttention, NonContiguousAndMisalignedInputs) {
  TESSERA_SKIP_WITHOUT_GPU();
  const MaskCase c = make_mask_case("block_causal", 65);
  const at::Device gpu(at::kCUDA);
  const at::Tensor q = randn({2, 65, 3, 64}, 1, at::kBFloat16).to(gpu).transpose(1, 2);
  const at::Tensor k_storage = randn({2 * 3 * 65 * 64 + 1}, 2, at::kBFloat16).to(gpu);
  const at::Tensor k = k_storage.narrow(0, 1, 2 * 3 * 65 * 64).view({2, 3, 65, 64});
  const at::Tensor v = randn({2, 65, 3, 64}, 3, at::kBFloat16).to(gpu).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(k.data_ptr()) % 16, 0u);
  const Expected want = dense_reference(q, k, v, at::zeros_like(q), c.allowed, 0.7);
  AttentionOptions o = cuda_backend(0.7);
  EXPECT_TRUE(relative_error_within(attention(q, k, v, c.mask, o), want.out, 1.5e-2, "out"));
}

// Automatic picks the kernel for bfloat16 / float16 CUDA tensors of head dim 64 or 128 (the
// forward is deterministic, so the results are identical), and the dense reference otherwise.
TEST(CudaAttention, AutomaticBackend) {
  TESSERA_SKIP_WITHOUT_GPU();
  const MaskCase c = make_mask_case("self_and_previous", 200);
  const at::Device gpu(at::kCUDA);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const at::Tensor q = randn({1, 2, 200, 128}, 1, dtype).to(gpu);
    const at::Tensor k = randn({1, 2, 200, 128}, 2, dtype).to(gpu);
    const at::Tensor v = randn({1, 2, 200, 128}, 3, dtype).to(gpu);
    AttentionOptions automatic;
    automatic.scale = 0.1;
    EXPECT_TRUE(attention(q, k, v, c.mask, automatic).equal(attention(q, k, v, c.mask,
                                                                      cuda_backend(0.1))));
  }
  // Head dim 96 and float32: the reference on the GPU.
  for (const auto& [dtype, dim] : std::vector<std::pair<at::ScalarType, int64_t>>{
           {at::kBFloat16, 96}, {at::kFloat, 64}}) {
    const at::Tensor q = randn({1, 2, 200, dim}, 4, dtype).to(gpu);
    const at::Tensor k = randn({1, 2, 200, dim}, 5, dtype).to(gpu);
    const at::Tensor v = randn({1, 2, 200, dim}, 6, dtype).to(gpu);
    AttentionOptions automatic;
    automatic.scale = 0.1;
    const at::Tensor out = attention(q, k, v, c.mask, automatic);
    EXPECT_TRUE(out.is_cuda());
    const Expected want = dense_reference(q, k, v, at::zeros_like(q), c.allowed, 0.1);
    EXPECT_TRUE(relative_error_within(out, want.out, 1.5e-2, "out (reference backend)"));
  }
}

// AttentionBackend::cuda names what it cannot take; checked with CPU tensors too (the dtype and
// head-dim checks come before the device check), so these run without a GPU.
TEST(CudaAttention, UnsupportedHeadDimAndDtypeOnTheCudaBackend) {
  const BlockMask mask = BlockMask::causal(8);
  AttentionOptions o;
  o.backend = AttentionBackend::cuda;
#ifdef TESSERA_WITH_CUDA
  for (const int64_t d : {32, 96, 256}) {
    SCOPED_TRACE(d);
    const at::Tensor x = at::zeros({1, 1, 8, d}, at::kBFloat16);
    EXPECT_TESSERA_ERROR(check_attention_inputs(x, x, x, mask, AttentionBackend::cuda),
                         fmt::format("head dim {} is not supported by the cuda kernel; expected "
                                     "D = 64 or D = 128",
                                     d));
  }
  const at::Tensor f32 = at::zeros({1, 1, 8, 64});
  EXPECT_TESSERA_ERROR(attention(f32, f32, f32, mask, o),
                       "the cuda backend takes bfloat16 or float16 tensors, got float32");
  const at::Tensor cpu = at::zeros({1, 1, 8, 64}, at::kBFloat16);
  EXPECT_TESSERA_ERROR(attention(cpu, cpu, cpu, mask, o),
                       "the cuda backend needs CUDA tensors, got tensors on cpu");
  if (at::hasCUDA()) {
    const at::Tensor x = at::zeros({1, 1, 8, 96}, at::TensorOptions(at::kBFloat16).device(at::kCUDA));
    EXPECT_TESSERA_ERROR(attention(x, x, x, mask, o),
                         "head dim 96 is not supported by the cuda kernel");
  }
#else
  const at::Tensor x = at::zeros({1, 1, 8, 64}, at::kBFloat16);
  EXPECT_TESSERA_ERROR(attention(x, x, x, mask, o), "this build has no CUDA attention kernel");
#endif
}

}  // namespace
}  // namespace tessera
