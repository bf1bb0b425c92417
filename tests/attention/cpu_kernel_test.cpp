// What only the CPU kernels (kernels/cpu) and their ATen adapter need checked. Their correctness
// against float64 attention, for every mask kind, dtype, shape and tile size, is in
// backend_ops_test.cpp with the other backends'. Here: the kernels run from their torch-free
// params alone, give the same bits on every call and (forward) on every thread count, take a
// grad_out in any layout, and their GEMM wrapper and its Eigen fallback compute the same products.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

// Internal headers of the library (not installed): the kernels' params and tile internals, and
// the ATen adapter.
#include "../../kernels/cpu/attention_kernels.h"
#include "../../kernels/cpu/attention_tile.h"
#include "../../src/attention/backends/backend.h"
#include "attention/attention_test_util.h"
#include "common/dense_attention.h"
#include "tessera/attention/block_mask.h"
#include "tessera/kernels/tile_plan.h"

namespace tessera {
namespace {

using testing::make_mask_case;
using testing::MaskCase;
using testing::randn;

// Restores LibTorch's intra-op thread count when a test that changes it ends.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(at::get_num_threads()) {}
  ~ThreadCountGuard() { at::set_num_threads(saved_); }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int saved_;
};

// The kernels need nothing but their params: a forward and backward pass launched on plain
// std::vector buffers, with the plan from make_tile_plan, give the adapter's bits exactly.
TEST(CpuAttentionKernel, RunsFromTorchFreeParamsWithTheAdaptersBits) {
  const int64_t B = 2, H = 2, L = 65, D = 32;
  const MaskCase c = make_mask_case("block_causal", L);
  const at::Tensor q = randn({B, H, L, D}, 1), k = randn({B, H, L, D}, 2);
  const at::Tensor v = randn({B, H, L, D}, 3), go = randn({B, H, L, D}, 4);
  const double scale = 0.2;
  const AttentionForward want = cpu::attention_forward(q, k, v, c.mask, scale);
  const AttentionGradients want_grad =
      cpu::attention_backward(q, k, v, want.out, want.lse, go, c.mask, scale);

  auto copy = [](const at::Tensor& t) {
    const at::Tensor f = t.contiguous();
    return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  };
  const std::vector<float> qv = copy(q), kv = copy(k), vv = copy(v), gov = copy(go);
  const std::vector<int64_t>& begin = c.mask.key_begin();
  const std::vector<int64_t>& end = c.mask.key_end();
  std::vector<int64_t> starts;
  const std::vector<int64_t> segs = testing::test_segments(L);
  int64_t position = 0;
  for (size_t s = 0; s + 1 < segs.size(); ++s) starts.push_back(position += segs[s]);
  TilePlanMask plan_mask{begin, end, L, nullptr, starts};

  const TilePlan forward_plan = make_tile_plan(plan_mask, cpu::kForwardTiles.rows);
  std::vector<float> out(B * H * L * D), lse(B * H * L);
  cpu::ForwardParams f;
  f.q = qv.data(), f.k = kv.data(), f.v = vv.data();
  f.q_strides = f.k_strides = f.v_strides = {H * L * D, L * D};
  f.out = out.data(), f.lse = lse.data();
  f.batch = B, f.heads = H, f.lq = L, f.lk = L, f.head_dim = D;
  f.scale = static_cast<float>(scale);
  f.mask = {begin, end, nullptr, forward_plan.tiles};
  f.threads.num_threads = at::get_num_threads();
  cpu::launch_attention_forward(f, cpu::DType::float32);
  EXPECT_TRUE(at::from_blob(out.data(), {B, H, L, D}).equal(want.out));
  EXPECT_TRUE(at::from_blob(lse.data(), {B, H, L}).equal(want.lse));

  const TilePlan backward_plan = make_tile_plan(plan_mask, cpu::kBackwardTiles.rows);
  std::vector<float> dq(qv.size()), dk(kv.size()), dv(vv.size());
  cpu::BackwardParams b;
  b.q = qv.data(), b.k = kv.data(), b.v = vv.data(), b.out = out.data(), b.grad_out = gov.data();
  b.lse = lse.data(), b.dq = dq.data(), b.dk = dk.data(), b.dv = dv.data();
  b.batch = B, b.heads = H, b.lq = L, b.lk = L, b.head_dim = D;
  b.scale = static_cast<float>(scale);
  b.mask = {begin, end, nullptr, backward_plan.tiles};
  b.threads.num_threads = at::get_num_threads();
  cpu::launch_attention_backward(b, cpu::DType::float32);
  EXPECT_TRUE(at::from_blob(dq.data(), {B, H, L, D}).equal(want_grad.dq));
  EXPECT_TRUE(at::from_blob(dk.data(), {B, H, L, D}).equal(want_grad.dk));
  EXPECT_TRUE(at::from_blob(dv.data(), {B, H, L, D}).equal(want_grad.dv));
}

// Repeated calls give the same bits; the forward's bits do not depend on the thread count (every
// task is one tile of one head), and the backward's are fixed for a given count, also when one
// head's keys are split into ranges (B * H = 1) and when the launch runs on the calling thread
// only (allow_parallel = false).
TEST(CpuAttentionKernel, DeterministicAndForwardIndependentOfThreadCount) {
  const ThreadCountGuard guard;
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const MaskCase c = make_mask_case("causal", 300);
    const at::Tensor q = randn({1, 1, 300, 64}, 5, dtype), k = randn({1, 1, 300, 64}, 6, dtype);
    const at::Tensor v = randn({1, 1, 300, 64}, 7, dtype), go = randn({1, 1, 300, 64}, 8, dtype);
    at::set_num_threads(1);
    const AttentionForward one = cpu::attention_forward(q, k, v, c.mask, 0.125);
    for (const int threads : {2, 3}) {
      at::set_num_threads(threads);
      const AttentionForward a = cpu::attention_forward(q, k, v, c.mask, 0.125);
      EXPECT_TRUE(a.out.equal(one.out)) << threads << " threads";
      EXPECT_TRUE(a.lse.equal(one.lse)) << threads << " threads";
      const AttentionGradients g1 =
          cpu::attention_backward(q, k, v, a.out, a.lse, go, c.mask, 0.125);
      const AttentionGradients g2 =
          cpu::attention_backward(q, k, v, a.out, a.lse, go, c.mask, 0.125);
      EXPECT_TRUE(g1.dq.equal(g2.dq) && g1.dk.equal(g2.dk) && g1.dv.equal(g2.dv))
          << threads << " threads";
      // The same split run on one thread (as inside a parallel region): the same bits.
      at::Tensor serial;
      at::parallel_for(0, 1, 1, [&](int64_t, int64_t) {
        serial = cpu::attention_backward(q, k, v, a.out, a.lse, go, c.mask, 0.125).dq;
      });
      EXPECT_TRUE(serial.equal(g1.dq)) << threads << " threads";
    }
  }
}

// grad_out as autograd often delivers it: expanded from a scalar. The adapter copies it to the
// contiguous rows the kernel reads.
TEST(CpuAttentionKernel, NonContiguousGradOutput) {
  const BlockMask mask = BlockMask::causal(40);
  const at::Tensor q = at::randn({1, 2, 40, 32}), k = at::randn({1, 2, 40, 32});
  const at::Tensor v = at::randn({1, 2, 40, 32});
  const at::Tensor go = at::ones({1}).expand({1, 2, 40, 32});
  const double scale = 0.3;
  const AttentionForward f = cpu::attention_forward(q, k, v, mask, scale);
  const AttentionGradients g = cpu::attention_backward(q, k, v, f.out, f.lse, go, mask, scale);
  const test_support::DenseAttention want =
      test_support::dense_attention_float64(q, k, v, go, mask.to_dense(), scale);
  EXPECT_TRUE(testing::all_close(g.dq, want.dq, 1e-4, 1e-3));
  EXPECT_TRUE(testing::all_close(g.dk, want.dk, 1e-4, 1e-3));
  EXPECT_TRUE(testing::all_close(g.dv, want.dv, 1e-4, 1e-3));
}

// The row-major GEMM wrapper (BLAS when linked) and the Eigen fallback, every transpose
// combination, against at::matmul in float64.
TEST(CpuAttentionKernel, TileGemmBothBackends) {
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
        EXPECT_TRUE(testing::all_close(c, want, 1e-5, 1e-5))
            << (backend == 0 ? "gemm" : "gemm_eigen");
      }
    }
  }
}

// The kernels' bfloat16 conversions are c10::BFloat16's (the scalar type the kernels used before
// they were torch-free), bit for bit: round to nearest even, NaN to 0x7FC0, and back.
TEST(CpuAttentionKernel, BFloat16ConversionsMatchC10) {
  const at::Tensor x = at::cat({at::randn({4096}) * 1e3, at::randn({4096}) * 1e-30,
                                at::tensor({0.f, -0.f, INFINITY, -INFINITY, NAN, -NAN,
                                            3.3895314e38f, 1.0039062f, 1.0117188f, 1.0078125f})});
  const float* xs = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const cpu::detail::BFloat16 ours(xs[i]);
    const c10::BFloat16 theirs(xs[i]);
    ASSERT_EQ(ours.bits, theirs.x) << "x = " << xs[i];
    const float back = static_cast<float>(ours), want = static_cast<float>(theirs);
    ASSERT_EQ(std::memcmp(&back, &want, sizeof(float)), 0) << "x = " << xs[i];
  }
}

}  // namespace
}  // namespace tessera
