// The schedules' masks against dense rules written here, the scale loss weights against their
// formulas, and the model checks.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "fixtures.h"
#include "tessera/schedule/hmar_schedule.h"
#include "tessera/schedule/next_scale_schedule.h"
#include "tessera/tokenizer/patch_tokenizer.h"

namespace tessera {
namespace {

std::vector<TokenGridSize> square_grids(const std::vector<int64_t>& sides) {
  std::vector<TokenGridSize> g;
  for (int64_t s : sides) g.push_back({s, s});
  return g;
}

// The scale of every position of the pyramid, counted by hand.
std::vector<int64_t> scale_of_positions(const std::vector<int64_t>& sides) {
  std::vector<int64_t> level;
  for (size_t s = 0; s < sides.size(); ++s)
    for (int64_t i = 0; i < sides[s] * sides[s]; ++i) level.push_back(static_cast<int64_t>(s));
  return level;
}

TEST(NextScaleMask, VarIsBlockCausalOverScales) {
  const std::vector<int64_t> sides = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  const std::vector<int64_t> level = scale_of_positions(sides);
  ASSERT_EQ(level.size(), 680u);
  const BlockMask mask = NextScaleSchedule().training_mask(square_grids(sides));
  ASSERT_EQ(mask.query_length(), 680);
  ASSERT_EQ(mask.key_length(), 680);
  const at::Tensor dense = mask.to_dense();
  auto d = dense.accessor<bool, 2>();
  int64_t mismatches = 0;
  for (int64_t q = 0; q < 680; ++q)
    for (int64_t k = 0; k < 680; ++k)  // VAR: d >= dT (the query's level >= the key's)
      mismatches += d[q][k] != (level[q] >= level[k]);
  EXPECT_EQ(mismatches, 0);
}

TEST(NextScaleMask, HmarIsBlockDiagonalOverScales) {
  const std::vector<int64_t> sides = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  const std::vector<int64_t> level = scale_of_positions(sides);
  const BlockMask mask = HmarSchedule().training_mask(square_grids(sides));
  const at::Tensor dense = mask.to_dense();
  auto d = dense.accessor<bool, 2>();
  int64_t mismatches = 0, visible = 0;
  for (int64_t q = 0; q < 680; ++q)
    for (int64_t k = 0; k < 680; ++k) {
      mismatches += d[q][k] != (level[q] == level[k]);  // HMAR: d == dT
      visible += level[q] == level[k];
    }
  EXPECT_EQ(mismatches, 0);
  // docs/architecture.md, "Attention masks and the benchmark protocol": block-diagonal density 0.239 at 680 tokens.
  EXPECT_NEAR(static_cast<double>(visible) / (680.0 * 680.0), 0.239, 5e-4);
}

TEST(NextScaleMask, NonSquareOrDecreasingGridsAreErrors) {
  EXPECT_NE(tessera::testing::error_message_of([] { NextScaleSchedule().training_mask({{1, 1}, {2, 3}}); })
                .find("square"),
            std::string::npos);
  EXPECT_NE(tessera::testing::error_message_of([] { HmarSchedule().training_mask({{2, 2}, {1, 1}}); })
                .find("increase"),
            std::string::npos);
}

TEST(ScaleLossWeights, PerTokenAndPerScale) {
  const std::vector<int64_t> sides = {1, 2, 3, 4};
  const auto tok = scale_loss_weights(ScaleLossWeighting::per_token, sides);
  const double expect[] = {1.0 / 30, 4.0 / 30, 9.0 / 30, 16.0 / 30};
  for (int s = 0; s < 4; ++s) EXPECT_NEAR(tok[s], expect[s], 1e-15);
  for (double w : scale_loss_weights(ScaleLossWeighting::per_scale, sides))
    EXPECT_NEAR(w, 0.25, 1e-15);
}

TEST(ScaleLossWeights, LognormalMatchesHmarFormula) {
  // HMAR's norm_dist_equivalent for (1, 2, 4): ratios 0.25, 0.5, 1 (mean 7/12, sample sd
  // sqrt(((1/3)^2 + (1/12)^2 + (5/12)^2) / 2)); z of the reversed ratios; normal pdf, normalised.
  const double mean = 7.0 / 12.0;
  const double sd = std::sqrt((1.0 / 9 + 1.0 / 144 + 25.0 / 144) / 2.0);
  const double reversed[] = {1.0, 0.5, 0.25};
  double pdf[3], total = 0;
  for (int i = 0; i < 3; ++i) {
    const double z = (reversed[i] - mean) / sd;
    total += (pdf[i] = std::exp(-z * z / 2));
  }
  const auto w = scale_loss_weights(ScaleLossWeighting::lognormal, {1, 2, 4});
  ASSERT_EQ(w.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(w[i], pdf[i] / total, 1e-12);
  EXPECT_THROW(scale_loss_weights(ScaleLossWeighting::lognormal, {4}), Error);
}

TEST(NextScaleModels, ChecksTokenizerBackboneAndHead) {
  test::SmallModels m = test::make_small_models();
  NextScaleSchedule var;
  HmarSchedule hmar;
  EXPECT_NO_THROW(var.check_models(m.models(), m.grids()));
  EXPECT_NO_THROW(hmar.check_models(m.models(), m.grids()));

  // No tokenizer, or one that is not a MultiScaleVqVae.
  ScheduleModels none{*m.backbone, *m.head, nullptr};
  EXPECT_NE(tessera::testing::error_message_of([&] { var.check_models(none, m.grids()); }).find("tokenizer"),
            std::string::npos);
  PatchTokenizer patches(PatchTokenizerConfig{});
  ScheduleModels wrong{*m.backbone, *m.head, &patches};
  EXPECT_NE(tessera::testing::error_message_of([&] { hmar.check_models(wrong, m.grids()); })
                .find("must be a MultiScaleVqVae"),
            std::string::npos);

  // Grids that are not the tokenizer's pyramid.
  EXPECT_NE(tessera::testing::error_message_of([&] { var.check_models(m.models(), square_grids({1, 2, 4})); })
                .find("patch_nums"),
            std::string::npos);

  // HMAR's indicator channel is accepted by HMAR only.
  test::SmallModels h = test::make_small_models(0, /*extra_channels=*/1);
  EXPECT_NO_THROW(hmar.check_models(h.models(), h.grids()));
  EXPECT_NE(tessera::testing::error_message_of([&] { var.check_models(h.models(), h.grids()); })
                .find("input channels"),
            std::string::npos);

  // A head over another codebook.
  auto other_head = make_head(test::var_head_config(64, 17));
  ScheduleModels bad_head{*m.backbone, *other_head, m.tokenizer.get()};
  EXPECT_NE(tessera::testing::error_message_of([&] { var.check_models(bad_head, m.grids()); }).find("codebook"),
            std::string::npos);
}

TEST(HmarConfig, RefinementPlanLimits) {
  const auto grids = square_grids({1, 2, 3, 4});
  HmarScheduleConfig c;
  c.sampling.refinement_steps = {0, 3, 2};
  HmarSchedule ok(c);
  EXPECT_EQ(ok.refinement_plan(grids), (std::vector<int64_t>{0, 3, 2, 0}));
  EXPECT_EQ(ok.num_steps(grids), 4 + 3 + 2);
  // A request's options replace the defaults for that request only.
  GenerationOptions request;
  request.schedule = HmarSamplingOptions{.refinement_steps = {0, 1}};
  EXPECT_EQ(ok.refinement_plan(grids, request), (std::vector<int64_t>{0, 1, 0, 0}));
  EXPECT_EQ(ok.num_steps(grids, request), 4 + 1);
  request.schedule = HmarSamplingOptions{.refinement_steps = {0, 4}};
  EXPECT_NE(tessera::testing::error_message_of([&] { ok.check_sampling(grids, request); })
                .find("at most 3"),
            std::string::npos);
  c.sampling.refinement_steps = {1};
  EXPECT_NE(tessera::testing::error_message_of([&] { HmarSchedule(c).refinement_plan(grids); }).find("scale 0"),
            std::string::npos);
  c.sampling.refinement_steps = {0, 4};  // 4 tokens take at most 3 refinement steps
  EXPECT_NE(tessera::testing::error_message_of([&] { HmarSchedule(c).refinement_plan(grids); })
                .find("at most 3"),
            std::string::npos);
  c.sampling.refinement_steps = {0, -1};
  EXPECT_THROW(HmarSchedule{c}, Error);
  c.sampling.refinement_steps = {};
  c.masked_training_fraction = 1.5;
  EXPECT_THROW(HmarSchedule{c}, Error);
}

}  // namespace
}  // namespace tessera
