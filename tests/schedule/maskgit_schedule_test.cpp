// MaskGitSchedule: the bidirectional mask, the training mask rule (ratio, spans), the decoding
// counts and commit rule against hand-computed steps with a scripted head, span ranking (max vs
// mean), seeds and batch invariance, and learning on Fashion-MNIST grey-level tokens.
#include "tessera/schedule/maskgit_schedule.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <utility>
#include <vector>

#include "schedule/schedule_test_util.h"
#include "tessera/core/error.h"
#include "tessera/nn/backbone_config.h"

namespace tessera {
namespace {

using schedule_test::ScriptedHead;

std::unique_ptr<Head> discrete_head(int64_t width, int64_t vocab, uint64_t seed = 1) {
  HeadConfig h;
  h.kind = HeadKind::discrete;
  h.discrete.width = width;
  h.discrete.vocab_size = vocab;
  return make_head(h, seed);
}

TEST(MaskGitSchedule, TrainingMaskIsBidirectional) {
  MaskGitSchedule schedule;
  const BlockMask mask = schedule.training_mask({{3, 3}});
  ASSERT_EQ(mask.query_length(), 10);
  for (int64_t q = 0; q < 10; ++q)
    for (int64_t k = 0; k < 10; ++k) EXPECT_TRUE(mask.allowed(q, k));
  EXPECT_EQ(schedule.num_steps({{3, 3}}), 8);
}

TEST(MaskGitSchedule, CheckModelsNeedsTheMaskId) {
  auto head = discrete_head(64, 16);
  Backbone with_mask(maskgit_style_config(64, 2, 4, 16, 17, 10));
  Backbone without_mask(maskgit_style_config(64, 2, 4, 16, 16, 10));
  MaskGitSchedule schedule;
  EXPECT_NO_THROW(schedule.check_models({with_mask, *head}, {{4, 4}}));
  try {
    schedule.check_models({without_mask, *head}, {{4, 4}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mask id"), std::string::npos) << e.what();
  }
  MaskGitScheduleConfig spans;
  spans.span_length = 3;  // does not divide 16
  EXPECT_THROW(MaskGitSchedule(spans).check_models({with_mask, *head}, {{4, 4}}), Error);
  MaskGitScheduleConfig bad;
  bad.sampling.steps = 0;
  EXPECT_THROW(MaskGitSchedule{bad}, Error);
}

// Per sample, clamp(⌈γ(r)·U⌉, 1, U) units masked: E[cos(π/2·r)] = 2/π, plus about half a unit
// for the ceiling.
TEST(MaskGitSchedule, TrainingMaskRatioAndSpans) {
  at::Generator gen = make_cpu_generator(3);
  MaskGitSchedule tokens;
  const at::Tensor m = tokens.draw_training_mask(4000, 64, gen);
  const at::Tensor per_row = m.sum(1).to(at::kDouble);
  EXPECT_GE(per_row.min().item<double>(), 1.0);
  EXPECT_NEAR(per_row.mean().item<double>() / 64.0, 2.0 / std::numbers::pi + 0.5 / 64, 0.01);
  // Every position equally likely.
  const at::Tensor per_position = m.to(at::kDouble).mean(0);
  EXPECT_LT((per_position - per_position.mean()).abs().max().item<double>(), 0.04);

  MaskGitScheduleConfig config;
  config.span_length = 4;
  config.span_training = SpanTraining::aligned;
  const at::Tensor s = MaskGitSchedule(config).draw_training_mask(500, 64, gen);
  const at::Tensor chunks = s.view({500, 16, 4});
  // Whole chunks: every chunk all masked or all visible.
  EXPECT_TRUE(at::equal(chunks.all(2), chunks.any(2)));
  EXPECT_NEAR(chunks.all(2).sum(1).to(at::kDouble).mean().item<double>() / 16.0,
              2.0 / std::numbers::pi + 0.5 / 16, 0.03);
}

// MAGNeT's table against the closed form: entry m is the smallest u with
// 1 − C(L − k, u) / C(L, u) ≥ m/100, the binomials evaluated through lgamma in fp64.
TEST(MaskGitSchedule, OverlappingSpanTableIsMagnetsMeanRateInverse) {
  for (const auto& [L, k] : {std::pair<int64_t, int64_t>{64, 3}, {256, 4}, {16, 16}}) {
    SCOPED_TRACE(::testing::Message() << "L " << L << " k " << k);
    auto mean_rate = [&](int64_t u) {
      if (u > L - k) return 1.0;
      auto log_choose = [](double n, double r) {
        return std::lgamma(n + 1) - std::lgamma(r + 1) - std::lgamma(n - r + 1);
      };
      return 1.0 - std::exp(log_choose(L - k, u) - log_choose(L, u));
    };
    const std::vector<int64_t> table = overlapping_span_starts_table(L, k);
    ASSERT_EQ(table.size(), 101u);
    for (int m = 0; m <= 100; ++m) {
      int64_t u = 0;
      // Equality up to rounding decides ties; 1e-12 keeps the reference on the same side.
      while (u < L - 1 && mean_rate(u) < m / 100.0 - 1e-12) ++u;
      if (u == L - 1 && mean_rate(u) < m / 100.0 - 1e-12) u = L;  // never reached: the table's end
      EXPECT_EQ(table[m], u) << "m " << m;
    }
  }
}

// Overlapping spans (MAGNeT's training): replayed from the same generator state, the mask is the
// union of k-token windows from u = max(1, LUT[round(100·γ(r))]) random distinct starts; over
// many draws the masked fraction follows γ's mean 2/π, which is what the table is for.
TEST(MaskGitSchedule, OverlappingSpansFollowTheTargetRate) {
  MaskGitScheduleConfig config;
  config.span_length = 4;
  const MaskGitSchedule schedule(config);
  const int64_t B = 6, L = 64, k = 4;
  at::Generator gen = make_cpu_generator(21), replay = make_cpu_generator(21);
  const at::Tensor mask = schedule.draw_training_mask(B, L, gen);
  const at::Tensor r = at::empty({B}, at::kDouble).uniform_(0.0, 1.0, replay);
  const at::Tensor scores = at::empty({B, L}, at::kFloat).uniform_(0.0, 1.0, replay);
  const std::vector<int64_t> table = overlapping_span_starts_table(L, k);
  for (int64_t b = 0; b < B; ++b) {
    const double rate = std::cos(std::numbers::pi / 2 * r[b].item<double>());
    const int64_t u = std::max<int64_t>(1, table[static_cast<size_t>(std::lround(100 * rate))]);
    // The u lowest scores are the starts.
    const at::Tensor starts = std::get<1>(at::sort(scores[b])).slice(0, 0, u);
    std::vector<bool> expected(L, false);
    for (int64_t i = 0; i < u; ++i)
      for (int64_t t = starts[i].item<int64_t>(); t < std::min(L, starts[i].item<int64_t>() + k); ++t)
        expected[static_cast<size_t>(t)] = true;
    for (int64_t t = 0; t < L; ++t) EXPECT_EQ(mask[b][t].item<bool>(), expected[t]) << b << " " << t;
  }
  const at::Tensor many = schedule.draw_training_mask(4000, L, gen);
  EXPECT_NEAR(many.to(at::kDouble).mean().item<double>(), 2.0 / std::numbers::pi, 0.02);
}

// The loss sees the masked tokens only: the targets are the ids at the positions of the mask
// replayed from the same generator state.
TEST(MaskGitSchedule, LossTargetsAreTheMaskedTokens) {
  Backbone backbone(maskgit_style_config(64, 2, 4, 16, 17, 10));
  ScriptedHead head(64, 16, 0);
  MaskGitSchedule schedule;
  const at::Tensor ids = at::arange(48, at::kLong).view({3, 16}) % 16;
  TrainingBatch batch;
  batch.tokens = Tokens{{ids}, {{4, 4}}};
  batch.labels = at::tensor({0, 1, 2}, at::kLong);
  at::Generator gen = make_cpu_generator(8), replay = make_cpu_generator(8);
  ScheduleLoss l = schedule.loss({backbone, head}, batch, gen);
  const at::Tensor mask = schedule.draw_training_mask(3, 16, replay);
  ASSERT_EQ(head.loss_targets.size(), 1u);
  EXPECT_TRUE(at::equal(head.loss_targets[0], ids.masked_select(mask)));
  EXPECT_EQ(l.predicted_tokens, mask.sum().item<int64_t>());
  EXPECT_LT(l.predicted_tokens, 48);
}

// No leak: with the same mask (same generator state), rewriting the masked ids leaves the hidden
// states the head is trained on unchanged; rewriting one visible id changes them.
TEST(MaskGitSchedule, MaskedTokensNeverReachTheBackbone) {
  Backbone backbone(maskgit_style_config(64, 2, 4, 16, 17, 10));
  MaskGitSchedule schedule;
  const at::Tensor ids = at::randint(0, 16, {3, 16}, make_cpu_generator(3), at::kLong);
  auto hidden_of = [&](const at::Tensor& values) {
    ScriptedHead head(64, 16, 0);
    TrainingBatch batch;
    batch.tokens = Tokens{{values}, {{4, 4}}};
    batch.labels = at::tensor({0, 1, 2}, at::kLong);
    at::Generator gen = make_cpu_generator(8);
    schedule.loss({backbone, head}, batch, gen);
    return head.loss_hidden.at(0);
  };
  at::Generator replay = make_cpu_generator(8);
  const at::Tensor mask = schedule.draw_training_mask(3, 16, replay);
  ASSERT_GT(mask.sum().item<int64_t>(), 0);
  const at::Tensor visible = at::nonzero(mask[0].logical_not()).flatten();
  ASSERT_GT(visible.numel(), 0);
  const at::Tensor hidden = hidden_of(ids);
  EXPECT_TRUE(at::equal(hidden_of(at::where(mask, (ids + 7) % 16, ids)), hidden));
  at::Tensor one_visible_changed = ids.clone();
  one_visible_changed[0][visible[0].item<int64_t>()] = (ids[0][visible[0]].item<int64_t>() + 1) % 16;
  EXPECT_FALSE(at::allclose(hidden_of(one_visible_changed), hidden));
}

// 16 tokens, 4 steps, cosine: masked after the steps floor(16·cos(π/8·(s+1))) = 14, 11, 6, then 0,
// so the steps commit 2, 3, 5, 6 tokens. With choice temperature 0 and log p = −position the
// least confident are the highest positions: step s commits the next positions in increasing
// order, and every committed token keeps the value of its step.
TEST(MaskGitSchedule, ScriptedDecodingCommitsByConfidence) {
  for (bool guided : {false, true}) {
    Backbone backbone(maskgit_style_config(64, 2, 4, 16, 65, 10));
    ScriptedHead head(64, 64, 0);
    head.log_p = -at::arange(16, at::kFloat);
    // The sampling options travel with the request; the schedule keeps its defaults (8 steps).
    MaskGitSchedule schedule;
    SampleRngs rngs(5, 0, 3);
    GenerationOptions options;
    options.schedule = MaskGitSamplingOptions{.steps = 4, .choice_temperature = 0.0};
    if (guided) options.guidance = Guidance::mar_token_ramp(3.0);
    const at::Tensor ids =
        schedule.sample({backbone, head}, at::tensor({0, 1, 2}, at::kLong), {{4, 4}}, options, rngs)
            .scales[0];
    const std::vector<int64_t> expected = {0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3};
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t p = 0; p < 16; ++p)
        EXPECT_EQ(ids[b][p].item<int64_t>(), expected[p]) << b << "," << p;
    ASSERT_EQ(head.calls.size(), 4u);
    const std::vector<int64_t> masked_after = {14, 11, 6, 0};
    for (int64_t s = 0; s < 4; ++s) {
      EXPECT_EQ(head.calls[s].rows, (guided ? 6 : 3) * 16);
      EXPECT_EQ(head.calls[s].progress.step, s);
      EXPECT_EQ(head.calls[s].progress.num_steps, 4);
      EXPECT_EQ(head.calls[s].progress.num_tokens, 16);
      EXPECT_EQ(head.calls[s].progress.masked_after_step, masked_after[s]);
    }
  }
}

// With the Gumbel term the positions are random, but each step still commits its count once.
TEST(MaskGitSchedule, RandomisedDecodingCommitsEachPositionOnce) {
  Backbone backbone(maskgit_style_config(64, 2, 4, 64, 65, 10));
  ScriptedHead head(64, 64, 0);
  head.log_p = at::zeros({64});
  MaskGitScheduleConfig config;
  config.sampling.steps = 8;
  MaskGitSchedule schedule(config);
  SampleRngs rngs(5, 0, 4);
  const at::Tensor ids =
      schedule.sample({backbone, head}, at::tensor({0, 1, 2, 3}, at::kLong), {{8, 8}}, {}, rngs)
          .scales[0];
  // masking_test's hand values for 64 tokens, 8 steps: 62 59 53 45 35 24 12 0.
  const std::vector<int64_t> commits = {2, 3, 6, 8, 10, 11, 12, 12};
  for (int64_t b = 0; b < 4; ++b)
    for (int64_t s = 0; s < 8; ++s) EXPECT_EQ((ids[b] == s).sum().item<int64_t>(), commits[s]);
  // Different samples commit different positions.
  EXPECT_FALSE(at::equal(ids[0], ids[1]));
}

// Chunks of 4: chunk 0 has the most confident token but the lowest mean. `max` commits chunk 0
// first; `mean` commits it last.
TEST(MaskGitSchedule, SpanScoringMaxAndMean) {
  for (auto scoring : {SpanScoring::max, SpanScoring::mean}) {
    Backbone backbone(maskgit_style_config(64, 2, 4, 16, 65, 10));
    ScriptedHead head(64, 64, 0);
    head.log_p = at::tensor({0.f, -10.f, -10.f, -10.f, -1.f, -1.f, -1.f, -1.f, -2.f, -2.f, -2.f,
                             -2.f, -3.f, -3.f, -3.f, -3.f});
    MaskGitScheduleConfig config;
    config.span_length = 4;  // fixed by training; the rest is the request's
    MaskGitSchedule schedule(config);
    SampleRngs rngs(5, 0, 1);
    GenerationOptions options;
    options.schedule =
        MaskGitSamplingOptions{.steps = 4, .choice_temperature = 0.0, .span_scoring = scoring};
    const at::Tensor ids =
        schedule.sample({backbone, head}, at::tensor({0}, at::kLong), {{4, 4}}, options, rngs)
            .scales[0][0];
    // floor(4·cos(π/8·(s+1))) = 3, 2, 1, 0: one chunk per step.
    const std::vector<int64_t> chunk_step = scoring == SpanScoring::max
                                                ? std::vector<int64_t>{0, 1, 2, 3}
                                                : std::vector<int64_t>{3, 0, 1, 2};
    for (int64_t p = 0; p < 16; ++p) EXPECT_EQ(ids[p].item<int64_t>(), chunk_step[p / 4]) << p;
  }
}

TEST(MaskGitSchedule, SeedsAndBatchInvariance) {
  Backbone backbone(maskgit_style_config(64, 2, 4, 16, 17, 10), 3);
  auto head = discrete_head(64, 16, 4);
  MaskGitScheduleConfig config;
  config.sampling.steps = 6;
  MaskGitSchedule schedule(config);
  GenerationOptions options;
  options.guidance = Guidance::constant(2.0);
  const at::Tensor labels = at::arange(8, at::kLong);
  SampleRngs a(21, 0, 8), b(21, 0, 8), other(22, 0, 8);
  const at::Tensor x = schedule.sample({backbone, *head}, labels, {{4, 4}}, options, a).scales[0];
  EXPECT_TRUE(
      at::equal(x, schedule.sample({backbone, *head}, labels, {{4, 4}}, options, b).scales[0]));
  EXPECT_FALSE(
      at::equal(x, schedule.sample({backbone, *head}, labels, {{4, 4}}, options, other).scales[0]));
  EXPECT_LT(x.max().item<int64_t>(), 16);  // no mask id left
  for (int64_t i : {0, 3, 7}) {
    SampleRngs alone(21, i, 1);
    const at::Tensor one =
        schedule.sample({backbone, *head}, labels.slice(0, i, i + 1), {{4, 4}}, options, alone)
            .scales[0];
    EXPECT_TRUE(at::equal(one[0], x[i])) << "sample " << i;
  }
}

// Learning: masked-token cross-entropy on held-out images (fixed mask draws) after a bounded run,
// against the same model on position-shuffled tokens. A mask that hid the visible tokens would
// not beat the control; one that let masked positions see their own ids would fall below the
// floor.
TEST(MaskGitSchedule, LearnsFashionMnistTokens) {
  const auto start = std::chrono::steady_clock::now();
  LabeledImages train = schedule_test::fashion_subset(DatasetSplit::train, 4096);
  LabeledImages test = schedule_test::fashion_subset(DatasetSplit::test, 256);
  const at::Tensor ids = schedule_test::grey_level_ids(train.images);
  const at::Tensor eval_ids = schedule_test::grey_level_ids(test.images);
  const std::vector<TokenGridSize> grids = {{7, 7}};
  auto run = [&](const at::Tensor& tr, const at::Tensor& ev) {
    BackboneConfig c = maskgit_style_config(64, 2, 2, 49, 17, 10);
    c.dropout = 0.0;
    c.condition_dropout = 0.0;
    Backbone backbone(c, 5);
    auto head = discrete_head(64, 16, 6);
    MaskGitSchedule schedule;
    return schedule_test::train_and_evaluate(schedule, backbone, *head, tr, train.labels, ev,
                                             test.labels, grids, 150, 32, 2e-3, 9);
  };
  const auto learned = run(ids, eval_ids);
  const auto control =
      run(schedule_test::shuffle_positions(ids, 1), schedule_test::shuffle_positions(eval_ids, 2));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("maskgit: held-out CE %.3f (train %.3f), control %.3f (train %.3f), %.1f s\n",
              learned.eval_loss, learned.final_train, control.eval_loss, control.final_train,
              seconds);
  // Measured: 1.71 against 2.22.
  EXPECT_LT(learned.eval_loss, 1.95);
  EXPECT_GT(control.eval_loss, 1.95);
  EXPECT_GT(learned.eval_loss, 0.3);
}

}  // namespace
}  // namespace tessera
