// tessera::attention_forward / attention_backward (attention_passes.h), the two passes the Python
// operators call: against dense fp64 autograd of the test's own formula, every mask rule, strided
// inputs; and the checks on what the caller hands back to the backward pass.

#include "tessera/attention/attention_passes.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "attention/attention_test_util.h"
#include "tessera/core/error.h"

namespace tessera {
namespace {

using testing::all_close;
using testing::dense_attention;
using testing::make_mask_case;
using testing::MaskCase;
using testing::randn;

class AttentionPassesTest : public ::testing::TestWithParam<std::string> {};

// The two passes, called one after the other as an autograd formula calls them, give what fp64
// autograd through the dense formula gives; q, k and v are strided views of one projection.
TEST_P(AttentionPassesTest, ForwardThenBackwardMatchDenseFloat64Autograd) {
  const int64_t b = 2, h = 3, length = 65, d = 32;
  const MaskCase c = make_mask_case(GetParam(), length, 11);
  const at::Tensor qkv = randn({b, length, 3, h, d}, 12);
  const at::Tensor q = qkv.select(2, 0).transpose(1, 2), k = qkv.select(2, 1).transpose(1, 2),
                   v = qkv.select(2, 2).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  const at::Tensor grad = randn({b, h, length, d}, 13);
  const double scale = 0.2;

  const AttentionForward f = attention_forward(q, k, v, c.mask, {.scale = scale});
  const AttentionGradients g =
      attention_backward(q, k, v, f.out, f.lse, grad, c.mask, {.scale = scale});

  at::Tensor qd = q.to(at::kDouble).requires_grad_(true);
  at::Tensor kd = k.to(at::kDouble).requires_grad_(true);
  at::Tensor vd = v.to(at::kDouble).requires_grad_(true);
  const at::Tensor want = dense_attention(qd, kd, vd, c.allowed, scale).out;
  want.backward(grad.to(at::kDouble));
  EXPECT_FALSE(f.out.requires_grad());
  EXPECT_TRUE(all_close(f.out, want.detach(), 2e-5, 1e-4)) << "out";
  EXPECT_TRUE(all_close(g.dq, qd.grad(), 2e-5, 1e-4)) << "dq";
  EXPECT_TRUE(all_close(g.dk, kd.grad(), 2e-5, 1e-4)) << "dk";
  EXPECT_TRUE(all_close(g.dv, vd.grad(), 2e-5, 1e-4)) << "dv";
}

INSTANTIATE_TEST_SUITE_P(Rules, AttentionPassesTest,
                         ::testing::ValuesIn(testing::all_rule_names()),
                         [](const auto& info) { return info.param; });

// What the backward pass is handed back must be what the forward returned: each mismatch is an
// error naming the tensor.
TEST(AttentionPasses, BackwardRefusesSavedTensorsOfTheWrongShapeOrDtype) {
  const int64_t length = 16, d = 32;
  const BlockMask mask = BlockMask::causal(length);
  const at::Tensor q = randn({1, 2, length, d}, 1), k = randn({1, 2, length, d}, 2),
                   v = randn({1, 2, length, d}, 3);
  const AttentionForward f = attention_forward(q, k, v, mask);
  const auto message = [&](const at::Tensor& out, const at::Tensor& lse, const at::Tensor& grad) {
    try {
      attention_backward(q, k, v, out, lse, grad, mask);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(f.out, f.lse.unsqueeze(-1), f.out).find("lse must be [1, 2, 16]"),
            std::string::npos);
  EXPECT_NE(message(f.out.narrow(2, 0, 8), f.lse, f.out).find("out must be [1, 2, 16, 32]"),
            std::string::npos);
  EXPECT_NE(message(f.out, f.lse, at::Tensor()).find("grad_out must be [1, 2, 16, 32]"),
            std::string::npos);
  EXPECT_NE(message(f.out, f.lse.to(at::kDouble), f.out).find("lse must be float32"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
