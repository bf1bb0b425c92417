// Learning-rate schedules, EMA and gradient clipping against their formulas.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/train/ema.h"
#include "tessera/train/gradient_clipping.h"
#include "tessera/train/lr_schedule.h"

namespace tessera {
namespace {

TEST(LrSchedule, CosineWithWarmupAtKnownPoints) {
  const LrScheduleConfig c{.kind = LrScheduleKind::cosine, .warmup_steps = 10, .min_ratio = 0.1};
  EXPECT_DOUBLE_EQ(lr_factor(c, 0, 110), 0.1);   // (0 + 1) / 10
  EXPECT_DOUBLE_EQ(lr_factor(c, 4, 110), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(c, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(c, 10, 110), 1.0);  // cos(0)
  EXPECT_NEAR(lr_factor(c, 60, 110), 0.55, 1e-15);  // halfway: 0.1 + 0.9·½
  EXPECT_NEAR(lr_factor(c, 35, 110), 0.1 + 0.9 * 0.5 * (1 + std::sqrt(0.5)), 1e-15);  // cos(π/4)
  EXPECT_NEAR(lr_factor(c, 110, 110), 0.1, 1e-15);
  EXPECT_NEAR(lr_factor(c, 500, 110), 0.1, 1e-15);  // held at the floor
}

TEST(LrSchedule, MatchesFormulaEverywhere) {
  const LrScheduleConfig c{.kind = LrScheduleKind::cosine, .warmup_steps = 7, .min_ratio = 0.0};
  for (int64_t s = 0; s < 57; ++s) {
    const double expected =
        s < 7 ? (s + 1) / 7.0 : 0.5 * (1 + std::cos(std::numbers::pi * (s - 7) / 50.0));
    EXPECT_NEAR(lr_factor(c, s, 57), expected, 1e-15) << s;
  }
}

TEST(LrSchedule, ConstantAndErrors) {
  const LrScheduleConfig c{.kind = LrScheduleKind::constant, .warmup_steps = 4, .min_ratio = 0};
  EXPECT_DOUBLE_EQ(lr_factor(c, 1, 100), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(c, 3, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(c, 99, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor({.kind = LrScheduleKind::cosine}, 0, 100), 1.0);
  EXPECT_THROW(lr_factor(c, -1, 100), Error);
  EXPECT_THROW((LrScheduleConfig{.kind = LrScheduleKind::cosine, .min_ratio = 2}.validate()),
               Error);
}

TEST(Ema, FollowsFormulaWithAndWithoutWarmup) {
  at::Tensor p = at::tensor({1.0, -2.0}, at::kDouble);
  for (bool warmup : {false, true}) {
    p.fill_(1.0);
    ExponentialMovingAverage ema({{"p", p}}, {.enabled = true, .decay = 0.9, .warmup = warmup});
    double expected = 1.0;
    const std::vector<double> values = {3.0, -1.0, 0.5, 10.0};
    for (size_t t = 0; t < values.size(); ++t) {
      p.fill_(values[t]);
      ema.update({{"p", p}});
      const double d = warmup ? std::min(0.9, (1.0 + t) / (10.0 + t)) : 0.9;
      expected = d * expected + (1 - d) * values[t];
      EXPECT_NEAR(ema.averages().at("p")[0].item<double>(), expected, 1e-12) << t;
    }
    EXPECT_EQ(ema.updates(), 4);
  }
  ExponentialMovingAverage ema({{"p", p}}, {.enabled = true, .decay = 0.999, .warmup = true});
  EXPECT_DOUBLE_EQ(ema.decay_at(0), 0.1);
  EXPECT_DOUBLE_EQ(ema.decay_at(10000), 0.999);
  EXPECT_THROW(ema.update({{"q", p}}), Error);
  EXPECT_THROW(ema.load({{"p", at::zeros({3}, at::kDouble)}}, 1), Error);
}

TEST(GradientClipping, GlobalNormAndTorchFactor) {
  at::Tensor a = at::zeros({2}).requires_grad_(true);
  at::Tensor b = at::zeros({1}).requires_grad_(true);
  at::Tensor c = at::zeros({1}).requires_grad_(true);  // no gradient: skipped
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm({{"a", a}, {"b", b}, {"c", c}}, 0.0), 5.0, 1e-12);  // measure only
  EXPECT_NEAR(clip_grad_norm(std::vector<at::Tensor>{a, b, c}, 1.0), 5.0, 1e-12);
  const double factor = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * factor, 1e-7);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * factor, 1e-7);
  EXPECT_NEAR(global_grad_norm({a, b}), 5.0 * factor, 1e-6);
  EXPECT_NEAR(clip_grad_norm(std::vector<at::Tensor>{a, b}, 10.0), 5.0 * factor, 1e-6);  // under the limit: unchanged
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * factor, 1e-7);
  b.mutable_grad() = at::tensor({std::nanf("")});
  EXPECT_TRUE(std::isnan(clip_grad_norm(std::vector<at::Tensor>{a, b}, 1.0)));
}

// Random float32 gradients of several shapes: the norm against a float64 sum written out element
// by element, and every clipped value against g·max/(norm + 1e-6) computed in float64.
TEST(GradientClipping, MatchesFloat64ReferenceOnRandomGradients) {
  at::Generator g = make_cpu_generator(7);
  std::vector<at::Tensor> parameters;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{16, 8, 3, 3}, {16}, {64, 32}, {5}}) {
    at::Tensor p = at::zeros(shape).requires_grad_(true);
    p.mutable_grad() = at::randn(shape, g) * 3.0;
    parameters.push_back(p);
  }
  std::vector<std::vector<double>> before;
  double squared = 0;
  for (const auto& p : parameters) {
    const at::Tensor grad = p.grad().contiguous();
    const float* data = grad.data_ptr<float>();
    before.emplace_back(data, data + grad.numel());
    for (const double v : before.back()) squared += v * v;
  }
  const double reference = std::sqrt(squared);
  const double max_norm = reference / 4;  // clipping is active
  const double norm = clip_grad_norm(parameters, max_norm);
  EXPECT_NEAR(norm, reference, 1e-12 * reference);
  const double factor = max_norm / (reference + 1e-6);
  for (size_t i = 0; i < parameters.size(); ++i) {
    const at::Tensor grad = parameters[i].grad().contiguous();
    const float* data = grad.data_ptr<float>();
    for (int64_t k = 0; k < grad.numel(); ++k) {
      const double expected = before[i][static_cast<size_t>(k)] * factor;
      ASSERT_NEAR(data[k], expected, 1e-6 * std::abs(expected) + 1e-30) << i << " " << k;
    }
  }
  EXPECT_NEAR(global_grad_norm(parameters), max_norm, 1e-6 * max_norm);
}

}  // namespace
}  // namespace tessera
