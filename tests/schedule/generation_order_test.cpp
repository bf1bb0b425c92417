// Generation orders against hand-computed permutations (Note [Generation orders]).
#include "tessera/schedule/generation_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/schedule/hi_mar_schedule.h"
#include "tessera/schedule/mar_schedule.h"
#include "tessera/schedule/maskgit_schedule.h"
#include "tessera/schedule/raster_schedule.h"

namespace tessera {
namespace {

TEST(GenerationOrder, RadicalInverseKnownValues) {
  EXPECT_DOUBLE_EQ(radical_inverse(0, 2), 0.0);
  EXPECT_DOUBLE_EQ(radical_inverse(1, 2), 0.5);
  EXPECT_DOUBLE_EQ(radical_inverse(6, 2), 0.375);      // 110₂ → 0.011₂
  EXPECT_DOUBLE_EQ(radical_inverse(5, 3), 7.0 / 9.0);  // 12₃ → 0.21₃
  EXPECT_THROW(radical_inverse(1, 1), Error);
}

TEST(GenerationOrder, HandComputedOrders) {
  EXPECT_EQ(generation_order(GenerationOrder::raster, 2, 3),
            (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  // Rings row + col = 0, 1, 2, 3, 4 on a 3x3 grid, each by increasing row.
  EXPECT_EQ(generation_order(GenerationOrder::near_to_far, 3, 3),
            (std::vector<int64_t>{0, 1, 3, 2, 4, 6, 5, 7, 8}));
  // Halton on 2x2: k=0 (0,0); k=1 (½,⅓)→(1,0); k=2 (¼,⅔)→(0,1); k=3,4 repeat; k=5 (⅝,7/9)→(1,1).
  EXPECT_EQ(generation_order(GenerationOrder::halton, 2, 2), (std::vector<int64_t>{0, 2, 1, 3}));
  // Halton on 3x3 (worked by hand through k = 11, where the last cell (2,2) appears).
  EXPECT_EQ(generation_order(GenerationOrder::halton, 3, 3),
            (std::vector<int64_t>{0, 4, 2, 6, 1, 5, 3, 7, 8}));
  EXPECT_THROW(generation_order(GenerationOrder::halton, 0, 3), Error);
}

TEST(GenerationOrder, EveryOrderIsAPermutation) {
  for (auto order :
       {GenerationOrder::raster, GenerationOrder::halton, GenerationOrder::near_to_far}) {
    for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 7}, {5, 9}, {16, 16}}) {
      std::vector<int64_t> cells = generation_order(order, h, w);
      std::sort(cells.begin(), cells.end());
      std::vector<int64_t> expected(static_cast<size_t>(h * w));
      for (size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<int64_t>(i);
      EXPECT_EQ(cells, expected) << generation_order_name(order) << " " << h << "x" << w;
    }
  }
  // near_to_far ends at the bottom-right cell.
  EXPECT_EQ(generation_order(GenerationOrder::near_to_far, 5, 9).back(), 44);
}

// The schedules' configs map to JSON: known keys parse, unknown keys and bad values are errors.
TEST(ScheduleConfigs, ParseFromJson) {
  const auto raster = config_from_json<RasterScheduleConfig>(
      nlohmann::json::parse(R"({"order": "near_to_far", "kv_cache": false})"));
  EXPECT_EQ(raster.order, GenerationOrder::near_to_far);
  EXPECT_FALSE(raster.sampling.kv_cache);
  const auto maskgit = config_from_json<MaskGitScheduleConfig>(nlohmann::json::parse(
      R"({"steps": 12, "span_length": 3, "span_scoring": "mean", "curve": "arccos"})"));
  EXPECT_EQ(maskgit.sampling.steps, 12);
  EXPECT_EQ(maskgit.span_length, 3);
  EXPECT_EQ(maskgit.sampling.span_scoring, SpanScoring::mean);
  EXPECT_EQ(maskgit.sampling.curve, MaskingCurve::arccos);
  EXPECT_DOUBLE_EQ(maskgit.sampling.choice_temperature, 4.5);
  const auto mar = config_from_json<MarScheduleConfig>(
      nlohmann::json::parse(R"({"buffer_size": 0, "mask_ratio": {"min": 0.5}})"));
  EXPECT_EQ(mar.buffer_size, 0);
  EXPECT_DOUBLE_EQ(mar.mask_ratio.min, 0.5);
  EXPECT_DOUBLE_EQ(mar.mask_ratio.std, 0.25);
  const auto hi_mar = config_from_json<HiMarScheduleConfig>(
      nlohmann::json::parse(R"({"pivot_factor": 4, "pivot_steps": 4})"));
  EXPECT_EQ(hi_mar.pivot_factor, 4);
  EXPECT_THROW(config_from_json<MaskGitScheduleConfig>(nlohmann::json::parse(R"({"stpes": 3})")),
               Error);
  EXPECT_THROW(config_from_json<MaskGitScheduleConfig>(nlohmann::json::parse(R"({"steps": 0})")),
               Error);
  EXPECT_THROW(
      config_from_json<RasterScheduleConfig>(nlohmann::json::parse(R"({"order": "spiral"})")),
      Error);
}

}  // namespace
}  // namespace tessera
