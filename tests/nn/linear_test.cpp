// tessera::linear (tessera/nn/linear.h): both backends against a float64 product, the same bits on
// every call and thread count, and at::linear wherever autograd records or autocast is on.
#include "tessera/nn/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "common/error_message.h"
#include "tessera/core/machine.h"
#include "tessera/nn/autocast.h"

namespace tessera {
namespace {

struct Problem {
  at::Tensor x, weight, bias;
};

Problem problem(int64_t rows, int64_t in_features, int64_t out_features) {
  at::manual_seed(5);
  return {at::randn({rows, in_features}), at::randn({out_features, in_features}) * 0.03,
          at::randn({out_features})};
}

// ‖y − y₆₄‖∞ / ‖y₆₄‖∞ against the product computed in float64.
double error_against_float64(const at::Tensor& y, const Problem& p) {
  const at::Tensor exact = at::linear(p.x.to(at::kDouble), p.weight.to(at::kDouble),
                                      p.bias.to(at::kDouble));
  return (y.to(at::kDouble) - exact).abs().max().item<double>() /
         exact.abs().max().item<double>();
}

// Float32 sums of 1024 products carry a relative rounding of about sqrt(1024)·2^-24 ≈ 2e-6; both
// backends stay below 1e-5 of the largest output (measured: a few 1e-7).
TEST(Linear, BothBackendsMatchTheFloat64Product) {
  if (!at::hasMKLDNN()) GTEST_SKIP() << "LibTorch without oneDNN";
  const at::NoGradGuard no_grad;
  for (const int64_t rows : {1, 2, 8, 24, 64, 200}) {
    const Problem p = problem(rows, 1024, 1024);
    for (const LinearBackend backend : {LinearBackend::aten, LinearBackend::onednn}) {
      const double error = error_against_float64(linear(p.x, p.weight, p.bias, backend), p);
      EXPECT_LT(error, 1e-5) << to_string(backend) << ", " << rows << " rows";
    }
    EXPECT_LT(error_against_float64(linear(p.x, p.weight, p.bias), p), 1e-5) << rows << " rows";
  }
}

TEST(Linear, OneDnnKeepsItsBitsAcrossCallsAndThreadCounts) {
  if (!at::hasMKLDNN()) GTEST_SKIP() << "LibTorch without oneDNN";
  const at::NoGradGuard no_grad;
  const int previous = at::get_num_threads();
  for (const int64_t rows : {2, 100, 512}) {
    const Problem p = problem(rows, 1024, 4096);
    at::set_num_threads(1);
    const at::Tensor one = linear(p.x, p.weight, p.bias, LinearBackend::onednn);
    at::set_num_threads(2);
    const at::Tensor two = linear(p.x, p.weight, p.bias, LinearBackend::onednn);
    const at::Tensor again = linear(p.x, p.weight, p.bias, LinearBackend::onednn);
    EXPECT_TRUE(at::equal(two, again)) << rows << " rows: two calls on 2 threads";
    EXPECT_TRUE(at::equal(one, two)) << rows << " rows: 1 vs 2 threads differ by "
                                     << (one - two).abs().max().item<double>();
  }
  at::set_num_threads(previous);
}

TEST(Linear, KeepsLeadingDimensionsAndAnUndefinedBias) {
  if (!at::hasMKLDNN()) GTEST_SKIP() << "LibTorch without oneDNN";
  const at::NoGradGuard no_grad;
  const Problem p = problem(6, 1024, 1024);
  const at::Tensor x = p.x.view({2, 3, 1024});
  const at::Tensor y = linear(x, p.weight, at::Tensor(), LinearBackend::onednn);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 1024}));
  EXPECT_TRUE(at::allclose(y, at::linear(x, p.weight), 1e-5, 1e-5));
}

// Training needs gradients and mixed precision needs autocast's casts: both stay on at::linear.
TEST(Linear, AutogradAndAutocastTakeAtLinear) {
  const Problem p = problem(128, 1024, 1024);
  const at::Tensor weight = p.weight.clone().requires_grad_(true);
  const at::Tensor y = linear(p.x, weight, p.bias);
  EXPECT_TRUE(y.requires_grad()) << "autograd must record the product";
  y.sum().backward();
  EXPECT_TRUE(weight.grad().defined());
  {
    const AutocastGuard autocast(at::kCPU);
    const at::NoGradGuard no_grad;
    EXPECT_EQ(linear(p.x, p.weight, p.bias).scalar_type(), at::kBFloat16);
  }
  const at::NoGradGuard no_grad;
  EXPECT_NE(testing::error_message_of([&] {
              (void)linear(p.x.to(at::kDouble), p.weight, p.bias, LinearBackend::onednn);
            }).find("float32 CPU inputs"),
            std::string::npos);
}

// The rule of Note [Linear layers through oneDNN] keeps small layers on at::linear everywhere.
TEST(Linear, SmallLayersStayOnAten) {
  EXPECT_EQ(cpu_linear_backend(512, 256, 1024), LinearBackend::aten);
  EXPECT_EQ(cpu_linear_backend(512, 64, 512), LinearBackend::aten);
}

// Where the rule takes oneDNN at all (an AMD CPU: two rows of a large layer go there), 16 to 63
// rows of a narrow layer stay on MKL only on an AVX-512 CPU, whose oneDNN kernel for them was
// measured slower; on an AVX2-only CPU they go to oneDNN too (LlamaGen-B's steps at batch 8).
TEST(Linear, NarrowInputsOfSixteenToSixtyThreeRowsFollowTheCpu) {
  if (cpu_linear_backend(2, 768, 2304) != LinearBackend::onednn) {
    EXPECT_EQ(cpu_linear_backend(16, 768, 2304), LinearBackend::aten);  // MKL everywhere
    return;
  }
  const LinearBackend narrow =
      cpu_has_any_flag({"avx512f"}) ? LinearBackend::aten : LinearBackend::onednn;
  EXPECT_EQ(cpu_linear_backend(16, 768, 2304), narrow);
  EXPECT_EQ(cpu_linear_backend(63, 1024, 4096), narrow);
  EXPECT_EQ(cpu_linear_backend(16, 4096, 1024), LinearBackend::onednn);  // wide inputs: oneDNN
  EXPECT_EQ(cpu_linear_backend(64, 1024, 4096), LinearBackend::onednn);
}

}  // namespace
}  // namespace tessera
