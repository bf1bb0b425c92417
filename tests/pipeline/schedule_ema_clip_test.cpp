// Learning-rate schedules, EMA and gradient clipping against their formulas.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "tessera/core/error.h"
#include "tessera/pipeline/ema.h"
#include "tessera/pipeline/gradient_clipping.h"
#include "tessera/pipeline/lr_schedule.h"

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

}  // namespace
}  // namespace tessera
