// int8 linear layers (tessera/nn/int8_linear.h) against a float64 product: every output within the
// rounding bound of its two quantized operands (a published bound, computed here in float64 from
// the inputs alone), the weight's per-channel rounding, a row's independence from its batch and
// from the thread count, and the module conversion's contract.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <tuple>
#include <vector>

#include "common/error_message.h"
#include "tessera/nn/int8_linear.h"
#include "tessera/nn/linear.h"

namespace tessera {
namespace {

bool skip_without_fbgemm() { return !int8_linear_available(); }

// Rows of very different magnitudes (the per-row scale must follow each) and channels too.
struct Problem {
  at::Tensor x, weight, bias;
};

Problem problem(int64_t rows, int64_t in_features, int64_t out_features, uint64_t seed = 7) {
  at::manual_seed(static_cast<int64_t>(seed));
  at::Tensor x = at::randn({rows, in_features}) *
                 at::pow(10.0, at::linspace(-3.0, 3.0, rows)).unsqueeze(1);
  at::Tensor weight = at::randn({out_features, in_features}) *
                      at::pow(10.0, at::linspace(-2.0, 0.0, out_features)).unsqueeze(1) * 0.05;
  return {x, weight, at::randn({out_features})};
}

// The error bound of a product of two rounded operands, in float64 from the inputs alone. With
// the weight rounded to a multiple of s_c = max_k |w_ck| / 127 (error ≤ s_c / 2) and the row to a
// multiple of a / Q with a = max_k |x_k| (error ≤ a / (2Q)),
//   |Δy_c| ≤ Σ_k |x_k| s_c / 2 + |w_ck| a / (2Q) + (s_c / 2)(a / (2Q)),
// plus float32's rounding of the result and of the scales (16 ulps of the sum of |x||w| is ample).
at::Tensor error_bound(const Problem& p, int64_t levels) {
  const at::Tensor x = p.x.to(at::kDouble).abs(), w = p.weight.to(at::kDouble).abs();
  const at::Tensor s = w.amax(1) / 127.0;                               // [out]
  const at::Tensor a = x.amax(1, /*keepdim=*/true);                     // [rows, 1]
  const double q = static_cast<double>(levels);
  const at::Tensor weight_term = x.sum(1, true) * s.unsqueeze(0) / 2;   // Σ|x_k| s_c/2
  const at::Tensor input_term = w.sum(1).unsqueeze(0) * a / (2 * q);    // Σ|w_ck| a/(2Q)
  const at::Tensor cross = s.unsqueeze(0) * a / (4 * q) * static_cast<double>(p.x.size(1));
  const at::Tensor float_rounding = at::matmul(x, w.t()) * (16 * std::ldexp(1.0, -24));
  return weight_term + input_term + cross + float_rounding;
}

at::Tensor exact_product(const Problem& p) {
  return at::linear(p.x.to(at::kDouble), p.weight.to(at::kDouble), p.bias.to(at::kDouble));
}

TEST(Int8Linear, EveryOutputWithinTheRoundingBoundOfItsTwoOperands) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const at::NoGradGuard no_grad;
  for (const auto& [rows, in, out] :
       std::vector<std::tuple<int, int, int>>{{1, 8, 3}, {7, 96, 64}, {64, 1024, 256}}) {
    const Problem p = problem(rows, in, out);
    const Int8LinearWeight int8(p.weight);
    const at::Tensor y = int8.forward(p.x, p.bias).to(at::kDouble);
    const at::Tensor error = (y - exact_product(p)).abs();
    const at::Tensor bound = error_bound(p, int8.input_levels());
    const double worst = (error / bound).max().item<double>();
    // How far the int8 product is from the exact one, relative to the product's size (the bias
    // left out): not 0, so the product really was quantized.
    const at::Tensor product = exact_product(p) - p.bias.to(at::kDouble);
    const double relative = ((y - exact_product(p)).norm() / product.norm()).item<double>();
    std::printf("[%d x %d] -> %d: worst error / bound %.3f, relative error %.3g (Q = %lld)\n", rows,
                in, out, worst, relative, static_cast<long long>(int8.input_levels()));
    EXPECT_LE(worst, 1.0) << rows << " rows, " << in << " -> " << out;
    EXPECT_GT(relative, 1e-5) << "indistinguishable from float32: the int8 path did not run";
    EXPECT_LT(relative, 0.05);
  }
}

// The weight the products use is w rounded to the nearest multiple of s_c = max_k |w_ck| / 127.
TEST(Int8Linear, DequantizedWeightIsThePerChannelRounding) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const Problem p = problem(2, 200, 48);
  const Int8LinearWeight int8(p.weight);
  const at::Tensor w = p.weight.to(at::kDouble);
  const at::Tensor s = (w.abs().amax(1) / 127.0).unsqueeze(1);
  const at::Tensor steps = int8.dequantized().to(at::kDouble) / s;
  EXPECT_LT((steps - steps.round()).abs().max().item<double>(), 1e-3) << "not multiples of s_c";
  EXPECT_LE(steps.round().abs().max().item<double>(), 127.0);
  EXPECT_LE(((steps.round() - w / s).abs()).max().item<double>(), 0.5 + 1e-3)
      << "not the nearest multiple";
  EXPECT_EQ(int8.in_features(), 200);
  EXPECT_EQ(int8.out_features(), 48);
}

// Each row is quantized with its own scale, so its output is the same bits alone or beside a row a
// million times larger, at any position.
TEST(Int8Linear, ARowDoesNotDependOnItsBatch) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const at::NoGradGuard no_grad;
  const Problem p = problem(6, 512, 300);
  const Int8LinearWeight int8(p.weight);
  const at::Tensor batch = int8.forward(p.x, p.bias);
  for (int64_t r = 0; r < p.x.size(0); ++r) {
    const at::Tensor alone = int8.forward(p.x.narrow(0, r, 1), p.bias);
    EXPECT_TRUE(at::equal(alone, batch.narrow(0, r, 1))) << "row " << r;
  }
  const at::Tensor shuffled = int8.forward(p.x.flip(0), p.bias).flip(0);
  EXPECT_TRUE(at::equal(shuffled, batch));
  // A 3-D input is the same rows.
  EXPECT_TRUE(at::equal(int8.forward(p.x.view({2, 3, 512}), p.bias).view({6, 300}), batch));
}

TEST(Int8Linear, SameBitsOnOneAndTwoThreads) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const at::NoGradGuard no_grad;
  const int previous = at::get_num_threads();
  const Problem p = problem(300, 1024, 1024);
  const Int8LinearWeight int8(p.weight);
  at::set_num_threads(1);
  const at::Tensor one = int8.forward(p.x, p.bias);
  at::set_num_threads(2);
  const at::Tensor two = int8.forward(p.x, p.bias);
  at::set_num_threads(previous);
  EXPECT_TRUE(at::equal(one, two));
}

TEST(Int8Linear, ZeroRowsGiveTheBiasAndNonFiniteRowsGiveNan) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const at::NoGradGuard no_grad;
  Problem p = problem(4, 64, 16);
  p.x[1].zero_();
  p.x[2][5] = std::numeric_limits<float>::quiet_NaN();
  p.x[3][0] = std::numeric_limits<float>::infinity();
  const Int8LinearWeight int8(p.weight);
  const at::Tensor y = int8.forward(p.x, p.bias);
  EXPECT_TRUE(at::equal(y[1], p.bias));
  EXPECT_TRUE(y[2].isnan().all().item<bool>());
  EXPECT_TRUE(y[3].isnan().all().item<bool>());
  EXPECT_TRUE(at::equal(y[0], int8.forward(p.x.narrow(0, 0, 1), p.bias)[0]));
  EXPECT_TRUE(at::allclose(int8.forward(p.x.narrow(0, 0, 1), at::Tensor()) + p.bias,
                          y.narrow(0, 0, 1), 1e-5, 1e-5))
      << "without a bias the same product";
}

TEST(Int8Linear, RefusesInputsItCannotTake) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const Problem p = problem(2, 32, 8);
  const Int8LinearWeight int8(p.weight);
  EXPECT_NE(testing::error_message_of([&] { int8.forward(at::randn({2, 31}), p.bias); })
                .find("the input must be float32 on the CPU [..., 32], got Float [2, 31]"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] { int8.forward(p.x.to(at::kDouble), p.bias); })
                .find("got Double"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] { int8.forward(p.x, at::randn({7})); })
                .find("the bias must be [8], got [7]"),
            std::string::npos);
  at::Tensor bad = p.weight.clone();
  bad[0][0] = std::numeric_limits<float>::infinity();
  EXPECT_NE(testing::error_message_of([&] { Int8LinearWeight{bad}; }).find("NaN or infinity"),
            std::string::npos);
}

// quantize_linear_weights: every Linear gets an int8 form, keeps its weight's shape but no float
// values, and runs through tessera::linear; dequantize_linear_weights gives the rounded weights
// back as floats.
TEST(Int8Linear, ModulesQuantizeAndComeBack) {
  if (skip_without_fbgemm()) GTEST_SKIP() << "LibTorch without FBGEMM";
  const at::NoGradGuard no_grad;
  at::manual_seed(3);
  const auto net = std::make_shared<torch::nn::Module>();
  auto embed = net->register_module("embed", torch::nn::Embedding(10, 64));
  auto first = net->register_module("first", torch::nn::Linear(64, 128));
  auto second = net->register_module("second", torch::nn::Linear(128, 32));
  const at::Tensor x = at::randn({5, 64});
  const at::Tensor fp32 = linear(at::gelu(linear(x, *first)), *second);
  const at::Tensor embedding = embed->weight.clone();

  EXPECT_EQ(quantize_linear_weights(*net), 2);
  EXPECT_EQ(quantize_linear_weights(*net), 0) << "already quantized";
  ASSERT_NE(int8_weight_of(*first), nullptr);
  EXPECT_EQ(first->weight.sizes(), (at::IntArrayRef{128, 64}));
  EXPECT_TRUE(first->weight.isnan().all().item<bool>()) << "the float weight must be gone";
  EXPECT_TRUE(at::equal(embed->weight, embedding)) << "only Linear layers are quantized";
  const at::Tensor int8 = linear(at::gelu(linear(x, *first)), *second);
  const double relative = ((int8 - fp32).norm() / fp32.norm()).item<double>();
  EXPECT_GT(relative, 0.0);
  EXPECT_LT(relative, 0.05);
  // A bias given in place of the layer's own.
  const at::Tensor other_bias = at::randn({128});
  EXPECT_TRUE(at::allclose(linear(x, *first, other_bias) - linear(x, *first),
                           other_bias - first->bias, 1e-5, 1e-5));

  const at::Tensor rounded = int8_weight_of(*first)->dequantized();
  EXPECT_EQ(dequantize_linear_weights(*net, at::kFloat), 2);
  EXPECT_EQ(int8_weight_of(*first), nullptr);
  EXPECT_TRUE(at::equal(first->weight, rounded));
  EXPECT_EQ(first->weight.scalar_type(), at::kFloat);
  EXPECT_EQ(dequantize_linear_weights(*net, at::kFloat), 0);
}

}  // namespace
}  // namespace tessera
