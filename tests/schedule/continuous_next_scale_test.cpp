// ContinuousNextScaleSchedule (FlowAR-style next-scale over continuous latents): the scales against
// cell averages and the upsampled inputs against the bilinear formula computed here in fp64, the
// teacher-forcing alignment and block-causality through perturbations that leave chosen scales
// unchanged, the decoding loop with a scripted head, seeds / batch invariance / KV-cache agreement
// with a real flow head, the models' checks, and learning on Fashion-MNIST patches.
#include "tessera/schedule/continuous_next_scale_schedule.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "common/error_message.h"
#include "schedule/schedule_test_util.h"
#include "tessera/core/error.h"
#include "tessera/nn/backbone_config.h"
#include "tessera/schedule/next_scale_schedule.h"

namespace tessera {
namespace {

using schedule_test::ScriptedHead;

ContinuousNextScaleScheduleConfig config_of(std::vector<int64_t> patch_nums,
                                            ScaleUpsampling upsampling = ScaleUpsampling::bilinear) {
  ContinuousNextScaleScheduleConfig c;
  c.patch_nums = std::move(patch_nums);
  c.upsampling = upsampling;
  return c;
}

// VAR's architecture over the pyramid, taking C-channel vectors (the upsampled previous scale).
BackboneConfig backbone_for(const std::vector<int64_t>& patch_nums, int64_t channels,
                            int64_t width = 64, int64_t depth = 2) {
  BackboneConfig c = var_style_config(width, depth, 4, patch_nums, channels, 10);
  return c;
}

std::unique_ptr<Head> flow_head(int64_t channels, int64_t width = 64, uint64_t seed = 1,
                                int64_t batch_multiplier = 4) {
  HeadConfig h;
  h.kind = HeadKind::flow_matching;
  h.flow_matching.batch_multiplier = batch_multiplier;
  h.flow_matching.mlp = {.token_channels = channels, .hidden_width = width, .width = 64,
                         .depth = 2, .frequency_embedding_size = 64};
  return make_head(h, seed);
}

// A 4x4 latent of one channel holding 0..15: scale 1 (2x2) is the block means 2.5, 4.5, 10.5,
// 12.5; scale 0 the mean 7.5; scale 2 the latent itself.
TEST(ContinuousNextScale, ScalesAreCellAverages) {
  ContinuousNextScaleSchedule schedule(config_of({1, 2, 4}));
  const at::Tensor latent = at::arange(16, at::kFloat).view({1, 16, 1});
  const std::vector<at::Tensor> s = schedule.scales(latent);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_TRUE(at::allclose(s[0].flatten(), at::tensor({7.5f})));
  EXPECT_TRUE(at::allclose(s[1].flatten(), at::tensor({2.5f, 4.5f, 10.5f, 12.5f})));
  EXPECT_TRUE(at::equal(s[2], latent));
  // Nearest: every 2x2 block of scale 2's input holds its block's mean.
  ContinuousNextScaleSchedule nearest(config_of({1, 2, 4}, ScaleUpsampling::nearest));
  const at::Tensor up = nearest.scale_input(s[1], 2).flatten();
  const float expected[16] = {2.5f, 2.5f, 4.5f, 4.5f, 2.5f, 2.5f, 4.5f, 4.5f,
                              10.5f, 10.5f, 12.5f, 12.5f, 10.5f, 10.5f, 12.5f, 12.5f};
  EXPECT_TRUE(at::allclose(up, at::from_blob(const_cast<float*>(expected), {16}).clone()));
}

// Bilinear with align_corners false, written out in fp64: output pixel o of n_out samples the
// input at x = (o + 0.5)·n_in/n_out − 0.5, clamped to [0, n_in − 1], interpolating its two
// neighbours; the 2D value is the product rule over rows and columns.
TEST(ContinuousNextScale, BilinearInputsMatchTheFormula) {
  ContinuousNextScaleSchedule schedule(config_of({3, 5}));
  const at::Tensor previous = at::randn({2, 9, 3}, make_cpu_generator(4));
  const at::Tensor up = schedule.scale_input(previous, 1);  // [2, 25, 3]
  ASSERT_EQ(up.sizes(), (std::vector<int64_t>{2, 25, 3}));
  auto source = [](int64_t o, int64_t n_in, int64_t n_out) {
    double x = (static_cast<double>(o) + 0.5) * static_cast<double>(n_in) /
                   static_cast<double>(n_out) - 0.5;
    x = std::clamp(x, 0.0, static_cast<double>(n_in - 1));
    const auto lo = static_cast<int64_t>(std::floor(x));
    const int64_t hi = std::min(lo + 1, n_in - 1);
    return std::make_tuple(lo, hi, x - static_cast<double>(lo));
  };
  const at::Tensor p = previous.to(at::kDouble);
  double worst = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < 5; ++j)
        for (int64_t ch = 0; ch < 3; ++ch) {
          const auto [r0, r1, fr] = source(i, 3, 5);
          const auto [c0, c1, fc] = source(j, 3, 5);
          auto at_ = [&](int64_t r, int64_t c) { return p[b][r * 3 + c][ch].item<double>(); };
          const double v = (1 - fr) * ((1 - fc) * at_(r0, c0) + fc * at_(r0, c1)) +
                           fr * ((1 - fc) * at_(r1, c0) + fc * at_(r1, c1));
          worst = std::max(worst, std::abs(v - up[b][i * 5 + j][ch].item<double>()));
        }
  EXPECT_LT(worst, 1e-5);
}

// Teacher forcing and block-causality, observed through the hidden rows the head receives. With
// patch_nums {1, 2, 4}, scale 1's rows read up(scale 0) and scale 2's rows read up(scale 1):
//   δ with zero mean in every 2x2 block leaves scales 0 and 1, hence every input, unchanged: all
//   hidden rows stay, only scale 2's targets move;
//   δ with block means (+1, −1, +1, −1) leaves scale 0 unchanged and changes scale 1: rows of
//   scales 0 and 1 stay (they see inputs up to up(scale 0)), rows of scale 2 change.
TEST(ContinuousNextScale, TrainingReadsThePreviousScaleOnly) {
  ContinuousNextScaleSchedule schedule(config_of({1, 2, 4}));
  Backbone backbone(backbone_for({1, 2, 4}, 2), 3);
  backbone.set_training(false);
  const at::Tensor latent = at::randn({2, 16, 2}, make_cpu_generator(5));
  auto run = [&](const at::Tensor& values) {
    ScriptedHead head(64, 0, 2);
    TrainingBatch batch;
    batch.tokens = Tokens{{values}, {{4, 4}}};
    batch.labels = at::tensor({1, 6}, at::kLong);
    at::Generator gen = make_cpu_generator(0);
    schedule.loss({backbone, head}, batch, gen);
    return std::make_tuple(head.loss_hidden.at(0).view({2, 21, 64}),
                           head.loss_targets.at(0).view({2, 21, 2}),
                           head.loss_weights.at(0).view({2, 21}));
  };
  const auto [hidden, targets, weights] = run(latent);
  // Targets: the scales in pyramid order; weights: per_token, so every row 1/21.
  const std::vector<at::Tensor> s = schedule.scales(latent);
  EXPECT_TRUE(at::equal(targets, at::cat(s, 1)));
  EXPECT_TRUE(at::allclose(weights, at::full({2, 21}, 1.0 / 21.0)));

  // δ1: +1 −1 / −1 +1 inside each 2x2 block of the 4x4 grid.
  at::Tensor delta1 = at::zeros({4, 4});
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 4; ++j) delta1[i][j] = ((i + j) % 2 == 0) ? 1.0 : -1.0;
  const at::Tensor d1 = delta1.view({1, 16, 1}).expand({2, 16, 2});
  const auto [hidden1, targets1, weights1] = run(latent + d1);
  EXPECT_TRUE(at::allclose(hidden1, hidden, 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(targets1.slice(1, 5, 21), targets.slice(1, 5, 21)));
  // δ2: each 2x2 block shifted by +1, −1, −1, +1 (block means change, the global mean does not).
  at::Tensor delta2 = at::zeros({4, 4});
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 4; ++j) delta2[i][j] = ((i / 2 + j / 2) % 2 == 0) ? 1.0 : -1.0;
  const at::Tensor d2 = delta2.view({1, 16, 1}).expand({2, 16, 2});
  const auto [hidden2, targets2, weights2] = run(latent + d2);
  EXPECT_TRUE(at::allclose(hidden2.slice(1, 0, 5), hidden.slice(1, 0, 5), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(hidden2.slice(1, 5, 21), hidden.slice(1, 5, 21), 1e-3, 1e-3));
}

// One head call per scale with the scale's rows (doubled under guidance) and the scale fields of
// GenerationProgress set; the scripted head draws the value `step`, so the result (the last
// scale) is 2 everywhere.
TEST(ContinuousNextScale, ScriptedDecodingDrawsOneScalePerCall) {
  for (bool cache : {true, false}) {
    ContinuousNextScaleSchedule schedule(config_of({1, 2, 4}));
    Backbone backbone(backbone_for({1, 2, 4}, 3));
    ScriptedHead head(64, 0, 3);
    GenerationOptions options;
    options.guidance = Guidance::var_scale_ramp(2.0);
    options.schedule = ContinuousNextScaleSamplingOptions{.use_kv_cache = cache};  // the request's
    SampleRngs rngs(1, 0, 2);
    const Tokens t = schedule.sample({backbone, head}, at::tensor({0, 9}, at::kLong), {{4, 4}},
                                     options, rngs);
    ASSERT_EQ(t.num_scales(), 1);
    EXPECT_EQ(t.grids[0], (TokenGridSize{4, 4}));
    EXPECT_TRUE(at::equal(t.scales[0], at::full({2, 16, 3}, 2.0f)));
    ASSERT_EQ(head.calls.size(), 3u);
    const int64_t rows[3] = {1, 4, 16};
    for (int64_t s = 0; s < 3; ++s) {
      EXPECT_EQ(head.calls[s].rows, 2 * 2 * rows[s]);
      EXPECT_EQ(head.calls[s].progress.scale, s);
      EXPECT_EQ(head.calls[s].progress.num_scales, 3);
      EXPECT_EQ(head.calls[s].progress.step, s);
    }
    EXPECT_EQ(schedule.num_steps({{4, 4}}), 3);
  }
}

TEST(ContinuousNextScale, SeedsBatchInvarianceAndCacheAgreement) {
  ContinuousNextScaleSchedule schedule(config_of({1, 2, 4}));
  ContinuousNextScaleScheduleConfig no_cache_config = config_of({1, 2, 4});
  no_cache_config.sampling.use_kv_cache = false;
  ContinuousNextScaleSchedule no_cache(no_cache_config);
  Backbone backbone(backbone_for({1, 2, 4}, 4), 2);
  auto head = flow_head(4);
  GenerationOptions options;
  options.guidance = Guidance::var_scale_ramp(2.0);
  options.head.flow.steps = 4;
  const at::Tensor labels = at::arange(8, at::kLong);
  auto sample = [&](ContinuousNextScaleSchedule& s, const at::Tensor& l, uint64_t seed,
                    int64_t first) {
    SampleRngs rngs(seed, first, l.size(0));
    return s.sample({backbone, *head}, l, {{4, 4}}, options, rngs).scales[0];
  };
  const at::Tensor x = sample(schedule, labels, 21, 0);
  EXPECT_TRUE(at::equal(x, sample(schedule, labels, 21, 0)));
  EXPECT_FALSE(at::allclose(x, sample(schedule, labels, 22, 0)));
  EXPECT_TRUE(at::allclose(x, sample(no_cache, labels, 21, 0), 1e-4, 1e-5));
  for (int64_t i : {0, 6}) {
    const at::Tensor one = sample(schedule, labels.slice(0, i, i + 1), 21, i);
    EXPECT_TRUE(at::allclose(one[0], x[i], 1e-4, 1e-5)) << "sample " << i;
  }
}

TEST(ContinuousNextScale, BadConfigsAndModelsAreNamed) {
  using testing::error_message_of;
  EXPECT_NE(error_message_of([] { ContinuousNextScaleSchedule(config_of({1, 4, 2})); })
                .find("must increase"),
            std::string::npos);
  ContinuousNextScaleSchedule schedule(config_of({1, 2, 4}));
  Backbone backbone(backbone_for({1, 2, 4}, 3));
  auto head = flow_head(3);
  EXPECT_EQ(error_message_of([&] { schedule.check_models({backbone, *head}, {{4, 4}}); }), "");
  EXPECT_NE(error_message_of([&] { schedule.check_models({backbone, *head}, {{8, 8}}); })
                .find("last scale"),
            std::string::npos);
  auto wrong_channels = flow_head(5);
  EXPECT_NE(error_message_of([&] { schedule.check_models({backbone, *wrong_channels}, {{4, 4}}); })
                .find("5 token channels"),
            std::string::npos);
  ScriptedHead discrete(64, 16, 0);
  EXPECT_NE(error_message_of([&] { schedule.check_models({backbone, discrete}, {{4, 4}}); })
                .find("continuous head"),
            std::string::npos);
  Backbone other_pyramid(backbone_for({1, 2, 3, 4}, 3));
  EXPECT_NE(error_message_of([&] { schedule.check_models({other_pyramid, *head}, {{4, 4}}); })
                .find("pyramid"),
            std::string::npos);
  // VAR's schedule points a continuous tokenizer here.
  PatchTokenizer patches(PatchTokenizerConfig{1, 4});
  NextScaleSchedule var;
  EXPECT_NE(error_message_of([&] {
              var.check_models({backbone, *head, &patches}, {{4, 4}});
            }).find("continuous_next_scale"),
            std::string::npos);
}

// Learning: 32x32 Fashion-MNIST as an 8x8 grid of 4x4 patches (16 channels), pyramid 1, 2, 4, 8,
// the flow head's held-out loss after a bounded run against the same models on position-shuffled
// patches (whose coarse scales say little about the fine ones).
TEST(ContinuousNextScale, LearnsFashionMnistPatches) {
  LabeledImages train = schedule_test::fashion_subset(DatasetSplit::train, 4096);
  LabeledImages test = schedule_test::fashion_subset(DatasetSplit::test, 256);
  const at::Tensor x = schedule_test::patch_vectors(prepare_fashion_mnist_images(train, 32, 1));
  const at::Tensor eval_x = schedule_test::patch_vectors(prepare_fashion_mnist_images(test, 32, 1));
  const std::vector<TokenGridSize> grids = {{8, 8}};
  auto run = [&](const at::Tensor& tr, const at::Tensor& ev) {
    BackboneConfig c = backbone_for({1, 2, 4, 8}, 16, 64, 2);
    c.condition_dropout = 0.0;
    Backbone backbone(c, 5);
    // One (t, noise) draw per row keeps the run short.
    auto head = flow_head(16, 64, 6, 1);
    ContinuousNextScaleSchedule schedule(config_of({1, 2, 4, 8}));
    return schedule_test::train_and_evaluate(schedule, backbone, *head, tr, train.labels, ev,
                                             test.labels, grids, 100, 32, 2e-3, 9);
  };
  const auto [learned, control] =
      schedule_test::compare_with_shuffled_positions("continuous next-scale", x, eval_x, run);
  // Measured: 0.33 against 0.50.
  EXPECT_LT(learned.eval_loss, 0.41);
  EXPECT_GT(control.eval_loss, 0.41);
}

}  // namespace
}  // namespace tessera
