// Guidance conventions, the progress descriptor and step annealing, against the formulas of the
// reference implementations written out by hand.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/head/guidance.h"
#include "tessera/head/sampling_options.h"
#include "tessera/head/step_annealing.h"

namespace tessera {
namespace {

GenerationProgress at_step(int64_t step, int64_t num_steps) {
  GenerationProgress p;
  p.step = step;
  p.num_steps = num_steps;
  return p;
}

TEST(Guidance, NoneAndConstant) {
  EXPECT_FALSE(Guidance::none().doubles_batch());
  EXPECT_EQ(Guidance::none().weight_at(at_step(3, 10)), 1.0);
  const Guidance g = Guidance::constant(4.0);
  EXPECT_TRUE(g.doubles_batch());
  for (int64_t s = 0; s < 10; ++s) EXPECT_EQ(g.weight_at(at_step(s, 10)), 4.0);
}

TEST(Guidance, VarScaleRampIsOnePlusCfgTimesScaleRatio) {
  // VAR: t = cfg·si/(S−1), logits = (1+t)·c − t·u = u + (1+t)·(c − u).
  const double cfg = 1.5;
  const Guidance g = Guidance::var_scale_ramp(cfg);
  for (int64_t si = 0; si < 10; ++si) {
    GenerationProgress p;
    p.scale = si;
    p.num_scales = 10;
    EXPECT_DOUBLE_EQ(g.weight_at(p), 1.0 + cfg * static_cast<double>(si) / 9.0) << si;
  }
  GenerationProgress single;
  EXPECT_THROW(g.weight_at(single), Error);  // one scale: the ramp is undefined
}

TEST(Guidance, MarTokenRampFollowsRevealedTokens) {
  // MAR: cfg_iter = 1 + (cfg − 1)·(seq_len − mask_len)/seq_len.
  const Guidance g = Guidance::mar_token_ramp(4.0);
  GenerationProgress p;
  p.num_tokens = 256;
  p.num_steps = 64;
  p.step = 10;
  p.masked_after_step = 192;
  EXPECT_DOUBLE_EQ(g.weight_at(p), 1.0 + 3.0 * 64.0 / 256.0);
  p.masked_after_step = 0;
  EXPECT_DOUBLE_EQ(g.weight_at(p), 4.0);
  p.masked_after_step = 256;
  EXPECT_DOUBLE_EQ(g.weight_at(p), 1.0);
  EXPECT_THROW(g.weight_at(at_step(0, 4)), Error);  // no token counts in the progress
}

TEST(Guidance, CutoffStopsGuidingAtTheStep) {
  const Guidance g = Guidance::cutoff(3.0, 4);
  for (int64_t s = 0; s < 10; ++s) EXPECT_EQ(g.weight_at(at_step(s, 10)), s < 4 ? 3.0 : 1.0) << s;
}

TEST(Guidance, AnnealedFollowsMagnetCosine) {
  // MAGNeT: τ = linspace(0, 1, T)[step], m = cos(π/2·τ), coef = m·max + (1 − m)·min.
  const Guidance g = Guidance::annealed(10.0, 1.0);
  const int64_t steps = 5;
  for (int64_t s = 0; s < steps; ++s) {
    const double tau = static_cast<double>(s) / 4.0;
    const double m = std::cos(std::numbers::pi / 2.0 * tau);
    EXPECT_NEAR(g.weight_at(at_step(s, steps)), m * 10.0 + (1.0 - m) * 1.0, 1e-12) << s;
  }
  EXPECT_DOUBLE_EQ(g.weight_at(at_step(0, steps)), 10.0);
  EXPECT_NEAR(g.weight_at(at_step(4, steps)), 1.0, 1e-12);
}

TEST(Guidance, ApplyGuidanceCombinesHalves) {
  at::Tensor c = at::tensor({1.0, 2.0, -1.0}, at::kDouble);
  at::Tensor u = at::tensor({0.5, 3.0, -1.0}, at::kDouble);
  at::Tensor g = apply_guidance(c, u, 2.5);
  const std::vector<double> expected = {0.5 + 2.5 * 0.5, 3.0 + 2.5 * -1.0, -1.0};
  for (int i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(g[i].item<double>(), expected[i]);
  // w = 1 is the conditional prediction itself, bit for bit.
  EXPECT_TRUE(apply_guidance(c, u, 1.0).equal(c));

  auto [cond, uncond] = split_guidance_batch(at::arange(6).reshape({6, 1}), "test");
  EXPECT_EQ(cond.size(0), 3);
  EXPECT_EQ(uncond[0].item<int64_t>(), 3);
  EXPECT_THROW(split_guidance_batch(at::zeros({5, 2}), "test"), Error);
}

TEST(Guidance, NegativeScalesAreErrors) {
  EXPECT_THROW(Guidance::constant(-0.5), Error);
  EXPECT_THROW(Guidance::var_scale_ramp(-1.0), Error);
  EXPECT_THROW(Guidance::mar_token_ramp(-2.0), Error);
  EXPECT_THROW(Guidance::annealed(3.0, -1.0), Error);
  EXPECT_THROW(Guidance::cutoff(2.0, -1), Error);
  EXPECT_THROW(Guidance::constant(std::nan("")), Error);
  Guidance g;
  g.kind = GuidanceKind::constant;
  g.scale = -1.0;
  EXPECT_THROW(g.weight_at(at_step(0, 1)), Error);
  try {
    Guidance::constant(-0.5);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scale must be finite and >= 0, got -0.5"),
              std::string::npos)
        << e.what();
  }
}

TEST(Guidance, ProgressOutOfRangeIsAnError) {
  EXPECT_THROW(at_step(5, 5).validate(), Error);
  EXPECT_THROW(at_step(0, 0).validate(), Error);
  GenerationProgress p;
  p.num_tokens = 4;
  p.masked_after_step = 5;
  EXPECT_THROW(p.validate(), Error);
  EXPECT_DOUBLE_EQ(at_step(3, 7).fraction(), 0.5);
  EXPECT_EQ(at_step(0, 1).fraction(), 0.0);
}

TEST(Guidance, RoundTripsThroughJson) {
  const Guidance g = Guidance::annealed(7.0, 2.0);
  const Guidance back = config_from_json<Guidance>(config_to_json(g));
  EXPECT_EQ(back.kind, GuidanceKind::annealed);
  EXPECT_EQ(back.scale, 7.0);
  EXPECT_EQ(back.final_scale, 2.0);
  EXPECT_THROW(config_from_json<Guidance>(nlohmann::json{{"kind", "linear"}}), Error);
}

TEST(StepAnnealing, LinearMatchesDisaExactly) {
  // DiSA: steps = lower + int((T−1−step)/(T−1)·(upper − lower)); checked against exact integer
  // arithmetic, floor((T−1−step)·Δ/(T−1)), which agrees with DiSA's float64 expression here.
  StepAnnealing a;
  a.enabled = true;
  a.first_steps = 50;
  a.last_steps = 5;
  const int64_t T = 64;
  for (int64_t s = 0; s < T; ++s) {
    EXPECT_EQ(a.steps_at(at_step(s, T)), 5 + (T - 1 - s) * 45 / (T - 1)) << s;
  }
  EXPECT_EQ(a.steps_at(at_step(0, T)), 50);
  EXPECT_EQ(a.steps_at(at_step(T - 1, T)), 5);
  EXPECT_EQ(a.steps_at(at_step(0, 1)), 50);
}

TEST(StepAnnealing, CosineAndTwoStage) {
  StepAnnealing a;
  a.enabled = true;
  a.first_steps = 50;
  a.last_steps = 5;
  a.curve = StepAnnealingCurve::cosine;
  // DiSA's int((cos(π·step/(T−1)) + 1)/2·Δ) for T = 64, Δ = 45, computed with Python's math.
  const std::vector<int64_t> expected_offsets = {
      45, 44, 44, 44, 44, 44, 44, 43, 43, 42, 42, 41, 41, 40, 39, 38, 38, 37, 36, 35, 34, 33,
      32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
      9,  8,  7,  6,  6,  5,  4,  3,  3,  2,  2,  1,  1,  0,  0,  0,  0,  0,  0,  0};
  for (int64_t s = 0; s < 64; ++s) {
    EXPECT_EQ(a.steps_at(at_step(s, 64)), 5 + expected_offsets[s]) << s;
  }
  a.curve = StepAnnealingCurve::two_stage;
  for (int64_t s = 0; s < 10; ++s) EXPECT_EQ(a.steps_at(at_step(s, 10)), s < 4.5 ? 50 : 5);
}

TEST(SamplingOptions, OutOfRangeOptionsAreErrors) {
  HeadSamplingOptions ok;
  EXPECT_NO_THROW(ok.validate());
  auto expect_error = [](auto mutate, const std::string& fragment) {
    HeadSamplingOptions o;
    mutate(o);
    try {
      o.validate();
      ADD_FAILURE() << "no error for " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([](auto& o) { o.temperature = 0.0; }, "temperature must be > 0, got 0");
  expect_error([](auto& o) { o.diffusion.clip_x_start = -1.0; }, "clip_x_start must be >= 0");
  expect_error([](auto& o) { o.temperature = -1.0; }, "temperature must be > 0");
  expect_error([](auto& o) { o.discrete.top_p = 0.0; }, "top_p must be in (0, 1]");
  expect_error([](auto& o) { o.discrete.top_p = 1.5; }, "top_p must be in (0, 1]");
  expect_error([](auto& o) { o.discrete.top_k = -1; }, "top_k must be >= 0");
  expect_error([](auto& o) { o.diffusion.steps = 0; }, "diffusion steps must be >= 1, got 0");
  expect_error([](auto& o) { o.flow.steps = 0; }, "flow steps must be >= 1, got 0");
  expect_error([](auto& o) { o.diffusion.ddim_eta = -0.1; }, "ddim_eta must be >= 0");
  expect_error([](auto& o) { o.step_annealing.last_steps = 0; }, "last_steps must be >= 1");
}

}  // namespace
}  // namespace tessera
