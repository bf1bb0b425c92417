// MarSchedule and HiMarSchedule: masks against dense rules, the truncated-normal mask ratio
// against its closed-form mean, the decoding counts and MAR's mask_by_order against an
// independently reconstructed order with a scripted head, seeds and batch invariance with real
// heads, and learning on Fashion-MNIST patches.
#include "tessera/schedule/mar_schedule.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "common/error_message.h"
#include "schedule/schedule_test_util.h"
#include "tessera/core/error.h"
#include "tessera/nn/backbone_config.h"
#include "tessera/schedule/hi_mar_schedule.h"

namespace tessera {
namespace {

using schedule_test::ScriptedHead;

std::unique_ptr<Head> continuous_head(HeadKind kind, int64_t channels, uint64_t seed = 1,
                                      int64_t batch_multiplier = 4) {
  HeadConfig h;
  h.diffusion.batch_multiplier = batch_multiplier;
  h.flow_matching.batch_multiplier = batch_multiplier;
  h.kind = kind;
  AdaLnMlpConfig mlp;
  mlp.token_channels = channels;
  mlp.hidden_width = 64;
  mlp.width = 64;
  mlp.depth = 2;
  mlp.frequency_embedding_size = 64;
  h.diffusion.mlp = mlp;
  h.flow_matching.mlp = mlp;
  return make_head(h, seed);
}

BackboneConfig mar_backbone(int64_t tokens, int64_t channels, int64_t buffer, int64_t heads = 4) {
  return mar_style_config(64, 2, heads, tokens, channels + 1, 10, buffer);
}

BackboneConfig hi_mar_backbone(int64_t pivots, int64_t tokens, int64_t channels, int64_t buffer,
                               int64_t heads = 4) {
  BackboneConfig c = mar_style_config(64, 2, heads, pivots + tokens, channels + 1, 10, buffer);
  c.segments = buffer > 0 ? std::vector<int64_t>{buffer, pivots, tokens}
                          : std::vector<int64_t>{pivots, tokens};
  c.level_embedding = true;  // tells pivot rows from dense rows besides their positions
  return c;
}

MarScheduleConfig mar_config(int64_t steps, int64_t buffer = 4) {
  MarScheduleConfig c;
  c.buffer_size = buffer;
  c.sampling.steps = steps;
  return c;
}

TEST(MarSchedule, TrainingMaskIsBidirectional) {
  MarSchedule schedule(mar_config(4));
  const BlockMask mask = schedule.training_mask({{3, 3}});
  ASSERT_EQ(mask.query_length(), 13);
  for (int64_t q = 0; q < 13; ++q)
    for (int64_t k = 0; k < 13; ++k) EXPECT_TRUE(mask.allowed(q, k));
}

// scipy.stats.truncnorm(−1.2, 0, loc=1, scale=0.25) has mean 1 + 0.25·(φ(−1.2) − φ(0)) /
// (Φ(0) − Φ(−1.2)) = 1 + 0.25·(0.194186 − 0.398942)/(0.5 − 0.115070) = 0.867017.
TEST(MarSchedule, MaskRatioIsMarsTruncatedNormal) {
  MarMaskRatio ratio;
  at::Generator gen = make_cpu_generator(1);
  double sum = 0, lo = 1, hi = 0;
  const int n = 5000;
  for (int i = 0; i < n; ++i) {
    const double r = ratio.draw(gen);
    sum += r;
    lo = std::min(lo, r);
    hi = std::max(hi, r);
  }
  EXPECT_GE(lo, 0.7);
  EXPECT_LE(hi, 1.0);
  EXPECT_NEAR(sum / n, 0.867017, 0.005);
  MarMaskRatio bad;
  bad.min = 0.9;
  bad.max = 0.8;
  EXPECT_THROW(bad.validate(), Error);
}

// The loss weights are MAR's training mask, rebuilt here from the same generator: one truncated
// normal ratio per batch (rejection sampling of mean + std·N(0, 1)), then per sample the argsort of
// uniforms as the order and its first ⌈L·ratio⌉ positions masked.
TEST(MarSchedule, LossWeightsAreMarsTrainingMask) {
  Backbone backbone(mar_backbone(16, 3, 4));
  ScriptedHead head(64, 0, 3);
  MarSchedule schedule(mar_config(4));
  TrainingBatch batch;
  batch.tokens = Tokens{{at::randn({5, 16, 3})}, {{4, 4}}};
  batch.labels = at::arange(5, at::kLong);
  at::Generator gen = make_cpu_generator(12), replay = make_cpu_generator(12);
  ScheduleLoss l = schedule.loss({backbone, head}, batch, gen);
  double ratio = -1;
  while (ratio < 0.7 || ratio > 1.0)
    ratio = 1.0 + 0.25 * at::empty({1}, at::kDouble).normal_(0.0, 1.0, replay).item<double>();
  const at::Tensor orders = at::argsort(at::empty({5, 16}, at::kFloat).uniform_(0.0, 1.0, replay),
                                        /*dim=*/int64_t{1}, /*descending=*/false);
  const auto count = static_cast<int64_t>(std::ceil(16 * ratio));
  at::Tensor expected = at::zeros({5, 16});
  for (int64_t b = 0; b < 5; ++b)
    for (int64_t r = 0; r < count; ++r) expected[b][orders[b][r].item<int64_t>()] = 1.0;
  ASSERT_EQ(head.loss_weights.size(), 1u);
  EXPECT_TRUE(at::equal(head.loss_weights[0], expected.flatten()));
  EXPECT_TRUE(at::equal(head.loss_targets[0], batch.tokens.scales[0].reshape({80, 3})));
  EXPECT_EQ(l.predicted_tokens, 5 * count);
}

// No leak: with the same generator state (the same mask), rewriting the masked tokens' values leaves
// every hidden state the backbone hands to the head unchanged, while rewriting one visible token
// changes them (so the comparison can fail). Attention is bidirectional, so a masked value that
// reached any input row would show in every output row.
TEST(MarSchedule, MaskedTokensNeverReachTheBackbone) {
  Backbone backbone(mar_backbone(16, 3, 4));
  MarSchedule schedule(mar_config(4));
  TrainingBatch batch;
  batch.tokens = Tokens{{at::randn({4, 16, 3}, make_cpu_generator(1))}, {{4, 4}}};
  batch.labels = at::arange(4, at::kLong);
  uint64_t seed = 0;
  auto hidden_and_weights = [&](const at::Tensor& values) {
    ScriptedHead head(64, 0, 3);
    TrainingBatch b = batch;
    b.tokens.scales[0] = values;
    at::Generator gen = make_cpu_generator(seed);
    schedule.loss({backbone, head}, b, gen);
    return std::make_pair(head.loss_hidden.at(0), head.loss_weights.at(0).view({4, 16}));
  };
  // MAR's ratio is often 1 (everything masked); take the first seed that leaves tokens visible.
  auto [hidden, weights] = hidden_and_weights(batch.tokens.scales[0]);
  while (weights.gt(0.5).all().item<bool>() && seed < 64) {
    ++seed;
    std::tie(hidden, weights) = hidden_and_weights(batch.tokens.scales[0]);
  }
  const at::Tensor masked = weights.gt(0.5).unsqueeze(-1);
  ASSERT_GT(masked.sum().item<int64_t>(), 0);
  ASSERT_LT(masked.sum().item<int64_t>(), 64) << "no seed below 64 left a token visible";
  const at::Tensor rewritten =
      at::where(masked, at::randn({4, 16, 3}, make_cpu_generator(2)) * 5, batch.tokens.scales[0]);
  EXPECT_TRUE(at::equal(hidden_and_weights(rewritten).first, hidden));
  const at::Tensor visible = at::nonzero(weights[0].lt(0.5)).flatten();
  at::Tensor one_visible_changed = batch.tokens.scales[0].clone();
  one_visible_changed[0][visible[0].item<int64_t>()] += 1.0;
  EXPECT_FALSE(at::allclose(hidden_and_weights(one_visible_changed).first, hidden));
}

TEST(MarSchedule, CheckModelsNeedsTheIndicatorChannel) {
  auto head = continuous_head(HeadKind::flow_matching, 16);
  Backbone good(mar_backbone(16, 16, 4));
  Backbone no_indicator(mar_style_config(64, 2, 4, 16, 16, 10, 4));
  MarSchedule schedule(mar_config(4));
  EXPECT_NO_THROW(schedule.check_models({good, *head}, {{4, 4}}));
  try {
    schedule.check_models({no_indicator, *head}, {{4, 4}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("indicator"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MarSchedule(mar_config(4, 8)).check_models({good, *head}, {{4, 4}}), Error);
}

// 16 tokens, 4 steps: mask_len 14, 11, 6, 0 (as in maskgit_schedule_test). MAR's mask_by_order
// keeps the first mask_len entries of the order masked, so the entry at rank r of sample b's order
// is committed at step 0 when r >= 14, step 1 when r >= 11, step 2 when r >= 6, else step 3. The
// order is rebuilt here from the sample's generator: the argsort of its first 16 uniforms.
TEST(MarSchedule, ScriptedDecodingFollowsMaskByOrder) {
  for (bool guided : {false, true}) {
    Backbone backbone(mar_backbone(16, 3, 4));
    ScriptedHead head(64, 0, 3);
    MarSchedule schedule(mar_config(4));
    SampleRngs rngs(17, 0, 3);
    GenerationOptions options;
    if (guided) options.guidance = Guidance::mar_token_ramp(3.0);
    const at::Tensor tokens =
        schedule.sample({backbone, head}, at::tensor({0, 1, 2}, at::kLong), {{4, 4}}, options, rngs)
            .scales[0];
    SampleRngs replay(17, 0, 3);
    const at::Tensor orders = at::argsort(replay.uniform({16}), /*dim=*/int64_t{1},
                                          /*descending=*/false);
    auto step_of_rank = [](int64_t r) { return r >= 14 ? 0 : r >= 11 ? 1 : r >= 6 ? 2 : 3; };
    for (int64_t b = 0; b < 3; ++b) {
      for (int64_t r = 0; r < 16; ++r) {
        const int64_t p = orders[b][r].item<int64_t>();
        EXPECT_TRUE(at::all(tokens[b][p] == static_cast<double>(step_of_rank(r))).item<bool>())
            << "sample " << b << " rank " << r;
      }
    }
    ASSERT_EQ(head.calls.size(), 4u);
    // The progress carries MAR's mask_len, floored at 1 at the last step (sample.step.3.mask_len
    // in ../shared/parity/mar-tiny is 1), though all 6 remaining tokens are predicted there.
    const std::vector<int64_t> masked_after = {14, 11, 6, 1}, predicted = {2, 3, 5, 6};
    for (int64_t s = 0; s < 4; ++s) {
      EXPECT_EQ(head.calls[s].rows, (guided ? 6 : 3) * predicted[s]);
      EXPECT_EQ(head.calls[s].progress.step, s);
      EXPECT_EQ(head.calls[s].progress.num_tokens, 16);
      EXPECT_EQ(head.calls[s].progress.masked_after_step, masked_after[s]);
    }
    if (guided) {
      // Both halves of a guided call hold the same positions' rows (different labels).
      const at::Tensor h = head.calls[0].hidden;
      EXPECT_FALSE(at::allclose(h.slice(0, 0, 6), h.slice(0, 6, 12)));
    }
  }
}

TEST(MarSchedule, SeedsAndBatchInvarianceWithDiffusionHead) {
  Backbone backbone(mar_backbone(16, 4, 4), 3);
  auto head = continuous_head(HeadKind::diffusion, 4, 4);
  MarSchedule schedule(mar_config(4));
  GenerationOptions options;
  options.guidance = Guidance::mar_token_ramp(2.0);
  options.head.diffusion.steps = 5;
  const at::Tensor labels = at::arange(8, at::kLong);
  SampleRngs a(31, 0, 8), b(31, 0, 8), other(32, 0, 8);
  const at::Tensor x = schedule.sample({backbone, *head}, labels, {{4, 4}}, options, a).scales[0];
  EXPECT_TRUE(
      at::equal(x, schedule.sample({backbone, *head}, labels, {{4, 4}}, options, b).scales[0]));
  EXPECT_FALSE(at::allclose(
      x, schedule.sample({backbone, *head}, labels, {{4, 4}}, options, other).scales[0]));
  for (int64_t i : {0, 6}) {
    SampleRngs alone(31, i, 1);
    const at::Tensor one =
        schedule.sample({backbone, *head}, labels.slice(0, i, i + 1), {{4, 4}}, options, alone)
            .scales[0];
    EXPECT_TRUE(at::allclose(one[0], x[i], 1e-4, 1e-5)) << "sample " << i;
  }
}

// Learning: the flow-matching loss on held-out patches (fixed draws) after a bounded run, against
// the same model on position-shuffled patches, where visible tokens say little about the masked
// ones.
TEST(MarSchedule, LearnsFashionMnistPatches) {
  LabeledImages train = schedule_test::fashion_subset(DatasetSplit::train, 4096);
  LabeledImages test = schedule_test::fashion_subset(DatasetSplit::test, 256);
  const at::Tensor x = schedule_test::patch_vectors(train.images);
  const at::Tensor eval_x = schedule_test::patch_vectors(test.images);
  const std::vector<TokenGridSize> grids = {{7, 7}};
  auto run = [&](const at::Tensor& tr, const at::Tensor& ev) {
    BackboneConfig c = mar_backbone(49, 16, 4, 2);
    c.condition_dropout = 0.0;
    Backbone backbone(c, 5);
    // One (t, noise) draw per row keeps the run short.
    auto head = continuous_head(HeadKind::flow_matching, 16, 6, 1);
    MarSchedule schedule(mar_config(8));
    return schedule_test::train_and_evaluate(schedule, backbone, *head, tr, train.labels, ev,
                                             test.labels, grids, 150, 32, 2e-3, 9);
  };
  const auto [learned, control] =
      schedule_test::compare_with_shuffled_positions("mar", x, eval_x, run);
  // Measured (4 draws per row): 0.49 against 0.62.
  EXPECT_LT(learned.eval_loss, 0.56);
  EXPECT_GT(control.eval_loss, 0.56);
}

// --- MAR's encoder–decoder split (Note [MAR encoder–decoder split]) ------------------------------

MarScheduleConfig split_config(int64_t steps, int64_t buffer = 4) {
  MarScheduleConfig c = mar_config(steps, buffer);
  c.encoder_decoder = true;
  return c;
}

// Encoder width 64 over C channels; decoder width 64 (the heads' hidden width) over 64 + 1.
BackboneConfig split_encoder(int64_t tokens, int64_t channels, int64_t buffer, int64_t depth = 2) {
  return mar_style_config(64, depth, 4, tokens, channels, 10, buffer);
}
BackboneConfig split_decoder(int64_t tokens, int64_t buffer, int64_t depth = 1) {
  return mar_decoder_config(64, depth, 4, tokens, /*encoder_width=*/64, buffer);
}

// Against an independent formulation: the encoder over the *whole* sequence with masked keys
// forbidden (BlockMask::from_dense) gives, at the buffer and visible rows, what the encoder over
// the gathered rows gives (every other operation is per row); the decoder's inputs are then built
// by hand — encoder output and a 0 indicator at those rows, [0, …, 0, 1] at masked rows.
TEST(MarEncoderDecoder, MatchesTheEncoderOverTheSequenceWithMaskedKeysForbidden) {
  const int64_t B = 3, L = 16, C = 3, c = 4;
  Backbone encoder(split_encoder(L, C, c), 1), decoder(split_decoder(L, c), 2);
  encoder.set_training(false);
  decoder.set_training(false);
  ScriptedHead head(64, 0, C);
  MarSchedule schedule(split_config(4, c));
  TrainingBatch batch;
  batch.tokens = Tokens{{at::randn({B, L, C}, make_cpu_generator(3))}, {{4, 4}}};
  batch.labels = at::tensor({2, 5, 9}, at::kLong);
  // The first seed whose mask leaves tokens visible (MAR's ratio is often 1).
  for (uint64_t seed = 0; seed < 64; ++seed) {
    head.loss_hidden.clear();
    head.loss_weights.clear();
    at::Generator gen = make_cpu_generator(seed);
    schedule.loss({encoder, head, nullptr, &decoder}, batch, gen);
    if (head.loss_weights.at(0).lt(0.5).any().item<bool>()) break;
  }
  const at::Tensor masked = head.loss_weights.at(0).view({B, L}).gt(0.5);
  ASSERT_TRUE(masked.logical_not().any().item<bool>());
  const at::Tensor hidden = head.loss_hidden.at(0).view({B, L, 64});
  at::NoGradGuard no_grad;
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor masked_row = at::cat({at::zeros({c}, at::kBool), masked[b]});  // [c + L]
    const at::Tensor allowed =
        masked_row.logical_not().unsqueeze(0).expand({c + L, c + L}).contiguous();
    const at::Tensor inputs = at::cat({at::zeros({1, c, C}), batch.tokens.scales[0][b].unsqueeze(0)}, 1);
    const at::Tensor encoded = encoder
                                   .forward(inputs, batch.labels.slice(0, b, b + 1),
                                            BlockMask::from_dense(allowed))
                                   .hidden[0];  // [c + L, 64]
    at::Tensor decoder_inputs = at::zeros({1, c + L, 65});
    for (int64_t row = 0; row < c + L; ++row) {
      if (masked_row[row].item<bool>()) {
        decoder_inputs[0][row][64] = 1.0;
      } else {
        decoder_inputs[0][row].slice(0, 0, 64).copy_(encoded[row]);
      }
    }
    const at::Tensor expected =
        decoder.forward(decoder_inputs, at::Tensor(), BlockMask::bidirectional(c + L)).hidden[0];
    EXPECT_TRUE(at::allclose(hidden[b], expected.slice(0, c, c + L), 1e-5, 1e-5)) << "sample " << b;
  }
}

// No leak through the split: rewriting masked values leaves the decoder's token rows unchanged;
// rewriting one visible token changes them.
TEST(MarEncoderDecoder, MaskedTokensNeverReachTheModels) {
  Backbone encoder(split_encoder(16, 3, 4), 1), decoder(split_decoder(16, 4), 2);
  MarSchedule schedule(split_config(4));
  const at::Tensor values = at::randn({4, 16, 3}, make_cpu_generator(1));
  uint64_t seed = 0;
  auto run = [&](const at::Tensor& tokens) {
    ScriptedHead head(64, 0, 3);
    TrainingBatch b;
    b.tokens = Tokens{{tokens}, {{4, 4}}};
    b.labels = at::arange(4, at::kLong);
    at::Generator gen = make_cpu_generator(seed);
    schedule.loss({encoder, head, nullptr, &decoder}, b, gen);
    return std::make_pair(head.loss_hidden.at(0), head.loss_weights.at(0).view({4, 16}));
  };
  auto [hidden, weights] = run(values);
  while (weights.gt(0.5).all().item<bool>() && seed < 64) {
    ++seed;
    std::tie(hidden, weights) = run(values);
  }
  const at::Tensor masked = weights.gt(0.5).unsqueeze(-1);
  ASSERT_LT(masked.sum().item<int64_t>(), 64) << "no seed below 64 left a token visible";
  const at::Tensor rewritten = at::where(masked, at::randn({4, 16, 3}) * 5, values);
  EXPECT_TRUE(at::equal(run(rewritten).first, hidden));
  const at::Tensor visible = at::nonzero(weights[0].lt(0.5)).flatten();
  at::Tensor one_visible_changed = values.clone();
  one_visible_changed[0][visible[0].item<int64_t>()] += 1.0;
  EXPECT_FALSE(at::allclose(run(one_visible_changed).first, hidden));
}

TEST(MarEncoderDecoder, SeedsAndBatchInvarianceUnderGuidance) {
  Backbone encoder(split_encoder(16, 4, 4), 3), decoder(split_decoder(16, 4), 4);
  auto head = continuous_head(HeadKind::flow_matching, 4, 5);
  MarSchedule schedule(split_config(4));
  GenerationOptions options;
  options.guidance = Guidance::mar_token_ramp(2.0);
  options.head.flow.steps = 5;
  const ScheduleModels models{encoder, *head, nullptr, &decoder};
  const at::Tensor labels = at::arange(8, at::kLong);
  SampleRngs a(51, 0, 8), b(51, 0, 8), other(52, 0, 8);
  const at::Tensor x = schedule.sample(models, labels, {{4, 4}}, options, a).scales[0];
  EXPECT_TRUE(at::equal(x, schedule.sample(models, labels, {{4, 4}}, options, b).scales[0]));
  EXPECT_FALSE(at::allclose(x, schedule.sample(models, labels, {{4, 4}}, options, other).scales[0]));
  for (int64_t i : {0, 5}) {
    SampleRngs alone(51, i, 1);
    const at::Tensor one =
        schedule.sample(models, labels.slice(0, i, i + 1), {{4, 4}}, options, alone).scales[0];
    EXPECT_TRUE(at::allclose(one[0], x[i], 1e-4, 1e-5)) << "sample " << i;
  }
}

TEST(MarEncoderDecoder, CheckModelsNamesWhatDoesNotFit) {
  auto head = continuous_head(HeadKind::flow_matching, 3);
  Backbone encoder(split_encoder(16, 3, 4)), decoder(split_decoder(16, 4));
  const std::vector<TokenGridSize> grids = {{4, 4}};
  MarSchedule split(split_config(4)), one_stack(mar_config(4));
  using testing::error_message_of;
  EXPECT_EQ(error_message_of([&] { split.check_models({encoder, *head, nullptr, &decoder}, grids); }),
            "");
  EXPECT_NE(error_message_of([&] { split.check_models({encoder, *head}, grids); })
                .find("no decoder backbone"),
            std::string::npos);
  Backbone with_indicator(mar_backbone(16, 3, 4));
  EXPECT_NE(error_message_of([&] {
              one_stack.check_models({with_indicator, *head, nullptr, &decoder}, grids);
            }).find("encoder_decoder is off"),
            std::string::npos);
  EXPECT_NE(error_message_of([&] {
              split.check_models({with_indicator, *head, nullptr, &decoder}, grids);
            }).find("no mask indicator"),
            std::string::npos);
  BackboneConfig conditional = split_decoder(16, 4);
  conditional.num_classes = 10;
  Backbone conditional_decoder(conditional);
  EXPECT_NE(error_message_of([&] {
              split.check_models({encoder, *head, nullptr, &conditional_decoder}, grids);
            }).find("unconditional"),
            std::string::npos);
  Backbone wrong_length(split_decoder(25, 4));
  EXPECT_NE(error_message_of([&] {
              split.check_models({encoder, *head, nullptr, &wrong_length}, grids);
            }).find("segments"),
            std::string::npos);
  // Hi-MAR runs one stack.
  Backbone hi_mar(hi_mar_backbone(4, 16, 3, 4));
  HiMarSchedule hi;
  EXPECT_NE(error_message_of([&] {
              hi.check_models({hi_mar, *head, nullptr, &decoder}, grids);
            }).find("only the mar schedule"),
            std::string::npos);
}

// Learning through the split, as LearnsFashionMnistPatches: a 1-block encoder and a 1-block
// decoder against the same models on position-shuffled patches.
TEST(MarEncoderDecoder, LearnsFashionMnistPatches) {
  LabeledImages train = schedule_test::fashion_subset(DatasetSplit::train, 4096);
  LabeledImages test = schedule_test::fashion_subset(DatasetSplit::test, 256);
  const at::Tensor x = schedule_test::patch_vectors(train.images);
  const at::Tensor eval_x = schedule_test::patch_vectors(test.images);
  const std::vector<TokenGridSize> grids = {{7, 7}};
  auto run = [&](const at::Tensor& tr, const at::Tensor& ev) {
    BackboneConfig e = split_encoder(49, 16, 4, /*depth=*/1);
    e.condition_dropout = 0.0;
    Backbone encoder(e, 5), decoder(split_decoder(49, 4, /*depth=*/1), 7);
    auto head = continuous_head(HeadKind::flow_matching, 16, 6, 1);
    MarSchedule schedule(split_config(8));
    return schedule_test::train_and_evaluate(schedule, encoder, *head, tr, train.labels, ev,
                                             test.labels, grids, 150, 32, 2e-3, 9, &decoder);
  };
  const auto [learned, control] =
      schedule_test::compare_with_shuffled_positions("mar encoder-decoder", x, eval_x, run);
  // Measured: 0.52 against 0.63.
  EXPECT_LT(learned.eval_loss, 0.56);
  EXPECT_GT(control.eval_loss, 0.56);
}

// --- Hi-MAR
// ----------------------------------------------------------------------------------------

HiMarScheduleConfig hi_mar_config(int64_t pivot_steps, int64_t dense_steps, int64_t buffer = 4) {
  HiMarScheduleConfig c;
  c.buffer_size = buffer;
  c.sampling.pivot_steps = pivot_steps;
  c.sampling.dense_steps = dense_steps;
  return c;
}

// Segments {4, 4, 16} for a 4x4 grid with 2x2 pivots: the dense rule by segment index.
TEST(HiMarSchedule, TrainingMaskIsBlockCausalOverBufferPivotsDense) {
  HiMarSchedule schedule(hi_mar_config(2, 4));
  const BlockMask mask = schedule.training_mask({{4, 4}});
  ASSERT_EQ(mask.query_length(), 24);
  auto segment = [](int64_t p) { return p < 4 ? 0 : p < 8 ? 1 : 2; };
  for (int64_t q = 0; q < 24; ++q)
    for (int64_t k = 0; k < 24; ++k)
      EXPECT_EQ(mask.allowed(q, k), segment(k) <= segment(q)) << q << "," << k;
  EXPECT_EQ(schedule.num_steps({{4, 4}}), 6);
}

TEST(HiMarSchedule, PivotsAreAreaAverages) {
  HiMarSchedule schedule(hi_mar_config(2, 4));
  // One channel, a 4x4 grid holding 0..15 in raster order: the top-left 2x2 block {0, 1, 4, 5}
  // averages to 2.5, then 4.5, 10.5, 12.5.
  const at::Tensor dense = at::arange(16, at::kFloat).view({1, 16, 1});
  const at::Tensor p = schedule.pivots(dense, {4, 4});
  EXPECT_TRUE(at::allclose(p.flatten(), at::tensor({2.5f, 4.5f, 10.5f, 12.5f})));
  EXPECT_THROW(schedule.pivot_grid({5, 4}), Error);
}

TEST(HiMarSchedule, ScriptedDecodingRunsPivotsThenDense) {
  Backbone backbone(hi_mar_backbone(4, 16, 3, 4));
  ScriptedHead head(64, 0, 3);
  HiMarSchedule schedule(hi_mar_config(2, 4));
  SampleRngs rngs(3, 0, 2);
  GenerationOptions options;
  options.guidance = Guidance::mar_token_ramp(2.0);
  const at::Tensor tokens =
      schedule.sample({backbone, head}, at::tensor({3, 4}, at::kLong), {{4, 4}}, options, rngs)
          .scales[0];
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 16, 3}));
  ASSERT_EQ(head.calls.size(), 6u);
  // Pivots: 4 tokens in 2 steps, mask_len floor(4·cos(π/4)) = 2 then 0. Dense: 14, 11, 6, 0.
  // The progress carries each phase's last mask_len floored at 1, as MAR's guidance ramp reads it.
  const std::vector<int64_t> num_tokens = {4, 4, 16, 16, 16, 16};
  const std::vector<int64_t> masked_after = {2, 1, 14, 11, 6, 1};
  const std::vector<int64_t> rows = {2, 2, 2, 3, 5, 6};
  for (int64_t s = 0; s < 6; ++s) {
    EXPECT_EQ(head.calls[s].progress.step, s);
    EXPECT_EQ(head.calls[s].progress.num_steps, 6);
    EXPECT_EQ(head.calls[s].progress.num_tokens, num_tokens[s]);
    EXPECT_EQ(head.calls[s].progress.masked_after_step, masked_after[s]);
    EXPECT_EQ(head.calls[s].rows, 2 * 2 * rows[s]);
  }
  // Dense values are the dense step (global steps 2..5): 2, 3, 5, 6 tokens of each.
  for (int64_t b = 0; b < 2; ++b) {
    const at::Tensor v = tokens[b].select(1, 0);
    for (int64_t s = 2; s < 6; ++s) EXPECT_EQ((v == s).sum().item<int64_t>(), rows[s]);
  }
}

// No leak in either phase, with the same generator state (the same masks) and integer-valued tokens
// so that pivot averages are exact. Phase 1 (pivots): rewriting the dense tokens under masked
// pivots changes only masked pivots, and leaves the pivot rows' hidden states unchanged. Phase 2
// (dense): a rewrite of the masked dense tokens that keeps every block's sum (+d on one masked
// token, −d on another of the same block) leaves both phases' hidden states unchanged. Changing a
// visible token (under a visible pivot) changes them, so each comparison can fail.
TEST(HiMarSchedule, MaskedTokensNeverReachTheBackbone) {
  Backbone backbone(hi_mar_backbone(16, 64, 3, 4));
  HiMarSchedule schedule(hi_mar_config(2, 4));
  const int64_t B = 4, L = 64, P = 16, C = 3;
  TrainingBatch batch;
  batch.tokens =
      Tokens{{at::randint(-8, 8, {B, L, C}, make_cpu_generator(1), at::kFloat)}, {{8, 8}}};
  batch.labels = at::arange(B, at::kLong);
  uint64_t seed = 0;
  struct Seen {
    at::Tensor pivot_hidden, dense_hidden, pivot_masked, dense_masked;
  };
  auto run = [&](const at::Tensor& values) {
    ScriptedHead head(64, 0, C);
    TrainingBatch b = batch;
    b.tokens.scales[0] = values;
    at::Generator gen = make_cpu_generator(seed);
    schedule.loss({backbone, head}, b, gen);
    EXPECT_EQ(head.loss_hidden.size(), 2u);
    return Seen{head.loss_hidden.at(0), head.loss_hidden.at(1),
                head.loss_weights.at(0).view({B, P}).gt(0.5),
                head.loss_weights.at(1).view({B, L}).gt(0.5)};
  };
  // MAR's ratio is often 1 (everything masked); take the first seed that leaves a pivot and a
  // dense token of sample 0 visible.
  Seen seen = run(batch.tokens.scales[0]);
  auto all_masked = [](const Seen& s) {
    return s.pivot_masked[0].all().item<bool>() || s.dense_masked[0].all().item<bool>();
  };
  while (all_masked(seen) && seed < 64) {
    ++seed;
    seen = run(batch.tokens.scales[0]);
  }
  ASSERT_FALSE(all_masked(seen)) << "no seed below 64 left tokens visible in both phases";
  // Dense position (i, j) of the 8x8 grid lies under pivot (i/2)·4 + j/2.
  auto pivot_of = [](int64_t position) { return (position / 8 / 2) * 4 + (position % 8) / 2; };

  // Phase 1: new values under every masked pivot.
  at::Tensor under_masked_pivots = batch.tokens.scales[0].clone();
  at::Tensor under_visible_pivot = batch.tokens.scales[0].clone();
  bool visible_changed = false;
  const at::Tensor noise = at::randint(1, 9, {B, L, C}, make_cpu_generator(2), at::kFloat);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t position = 0; position < L; ++position) {
      if (seen.pivot_masked[b][pivot_of(position)].item<bool>()) {
        under_masked_pivots[b][position] += noise[b][position];
      } else if (b == 0 && !visible_changed) {
        under_visible_pivot[b][position] += 1;
        visible_changed = true;
      }
    }
  }
  ASSERT_TRUE(visible_changed);
  EXPECT_TRUE(at::equal(run(under_masked_pivots).pivot_hidden, seen.pivot_hidden));
  EXPECT_FALSE(at::allclose(run(under_visible_pivot).pivot_hidden, seen.pivot_hidden));

  // Phase 2: ±d on pairs of masked dense tokens of one block.
  at::Tensor masked_pairs = batch.tokens.scales[0].clone();
  int64_t pairs = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::vector<int64_t>> masked_in_block(P);
    for (int64_t position = 0; position < L; ++position)
      if (seen.dense_masked[b][position].item<bool>())
        masked_in_block[pivot_of(position)].push_back(position);
    for (const auto& positions : masked_in_block) {
      if (positions.size() < 2) continue;
      const at::Tensor d = noise[b][positions[0]];
      masked_pairs[b][positions[0]] += d;
      masked_pairs[b][positions[1]] -= d;
      ++pairs;
    }
  }
  ASSERT_GT(pairs, 0);
  ASSERT_TRUE(at::equal(schedule.pivots(masked_pairs, {8, 8}),
                        schedule.pivots(batch.tokens.scales[0], {8, 8})));
  const Seen rewritten = run(masked_pairs);
  EXPECT_TRUE(at::equal(rewritten.dense_hidden, seen.dense_hidden));
  EXPECT_TRUE(at::equal(rewritten.pivot_hidden, seen.pivot_hidden));
  const at::Tensor visible = at::nonzero(seen.dense_masked[0].logical_not()).flatten();
  at::Tensor one_visible_changed = batch.tokens.scales[0].clone();
  one_visible_changed[0][visible[0].item<int64_t>()] += 1.0;
  EXPECT_FALSE(at::allclose(run(one_visible_changed).dense_hidden, seen.dense_hidden));
}

TEST(HiMarSchedule, SeedsAndBatchInvariance) {
  Backbone backbone(hi_mar_backbone(4, 16, 4, 4), 3);
  auto head = continuous_head(HeadKind::flow_matching, 4, 4);
  HiMarSchedule schedule(hi_mar_config(2, 4));
  GenerationOptions options;
  options.guidance = Guidance::mar_token_ramp(2.0);
  options.head.flow.steps = 5;
  const at::Tensor labels = at::arange(8, at::kLong);
  SampleRngs a(41, 0, 8), b(41, 0, 8);
  const at::Tensor x = schedule.sample({backbone, *head}, labels, {{4, 4}}, options, a).scales[0];
  EXPECT_TRUE(
      at::equal(x, schedule.sample({backbone, *head}, labels, {{4, 4}}, options, b).scales[0]));
  for (int64_t i : {1, 7}) {
    SampleRngs alone(41, i, 1);
    const at::Tensor one =
        schedule.sample({backbone, *head}, labels.slice(0, i, i + 1), {{4, 4}}, options, alone)
            .scales[0];
    EXPECT_TRUE(at::allclose(one[0], x[i], 1e-4, 1e-5)) << "sample " << i;
  }
}

// Learning: on an 8x8 grid of 4x4 patches (32x32 images) with 4x4 pivots, the held-out loss
// against the same model on position-shuffled patches.
TEST(HiMarSchedule, LearnsFashionMnistPatches) {
  LabeledImages train = schedule_test::fashion_subset(DatasetSplit::train, 4096);
  LabeledImages test = schedule_test::fashion_subset(DatasetSplit::test, 256);
  const at::Tensor x = schedule_test::patch_vectors(prepare_fashion_mnist_images(train, 32, 1));
  const at::Tensor eval_x = schedule_test::patch_vectors(prepare_fashion_mnist_images(test, 32, 1));
  const std::vector<TokenGridSize> grids = {{8, 8}};
  auto run = [&](const at::Tensor& tr, const at::Tensor& ev) {
    BackboneConfig c = hi_mar_backbone(16, 64, 16, 4, 2);
    c.condition_dropout = 0.0;
    Backbone backbone(c, 5);
    // One (t, noise) draw per row keeps the run short.
    auto head = continuous_head(HeadKind::flow_matching, 16, 6, 1);
    HiMarSchedule schedule(hi_mar_config(4, 8));
    return schedule_test::train_and_evaluate(schedule, backbone, *head, tr, train.labels, ev,
                                             test.labels, grids, 100, 32, 2e-3, 9);
  };
  const auto [learned, control] =
      schedule_test::compare_with_shuffled_positions("hi_mar", x, eval_x, run);
  // Measured: 0.81 against 0.97 (pivot + dense loss).
  EXPECT_LT(learned.eval_loss, 0.89);
  EXPECT_GT(control.eval_loss, 0.89);
}

}  // namespace
}  // namespace tessera
