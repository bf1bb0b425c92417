// Schedule sampling options: each kind's <Kind>SamplingOptions, kept flat in its config section
// (the generator file format), read from JSON over a config's defaults (refusing, by name, the
// options training fixed and keys that are no option), and handed to a schedule per request.
#include "tessera/schedule/schedule_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/error_message.h"
#include "tessera/core/config.h"

namespace tessera {
namespace {

// The sampling keys of a kind, in the order its options list them.
std::vector<std::string> sampling_keys(ScheduleKind kind) {
  ScheduleConfig config;
  config.kind = kind;
  ScheduleSamplingOptions options = sampling_defaults(config);
  config_detail::KeyCollector keys;
  options.visit(keys);
  return keys.names;
}

// The split keeps the file format: the sampling options of each kind are flat keys of its
// section, beside the options training fixed, exactly as before the split.
TEST(ScheduleConfig, SamplingOptionsAreFlatKeysOfTheirSection) {
  const std::vector<std::pair<ScheduleKind, std::vector<std::string>>> expected = {
      {ScheduleKind::raster, {"kv_cache"}},
      {ScheduleKind::maskgit, {"steps", "curve", "choice_temperature", "span_scoring"}},
      {ScheduleKind::mar, {"steps", "curve"}},
      {ScheduleKind::next_scale, {"use_kv_cache"}},
      {ScheduleKind::hmar,
       {"refinement_steps", "refinement_curve", "refinement_guidance", "mask_schedule"}},
      {ScheduleKind::hi_mar, {"pivot_steps", "dense_steps", "curve"}},
      {ScheduleKind::continuous_next_scale, {"use_kv_cache"}},
  };
  for (const auto& [kind, keys] : expected) {
    const std::string name = schedule_kind_name(kind);
    EXPECT_EQ(sampling_keys(kind), keys) << name;
    const nlohmann::json section = config_to_json(ScheduleConfig{})[name];
    ASSERT_TRUE(section.is_object()) << name;
    EXPECT_FALSE(section.contains("sampling")) << name;
    for (const std::string& key : keys) EXPECT_TRUE(section.contains(key)) << name << "." << key;
  }
  // A section as a generator file stores it reads back into the split struct.
  const auto config = config_from_json<ScheduleConfig>(
      nlohmann::json{{"kind", "maskgit"},
                     {"maskgit", {{"steps", 4}, {"condition_tokens", 0}, {"span_scoring", "mean"}}}});
  EXPECT_EQ(config.maskgit.sampling.steps, 4);
  EXPECT_EQ(config.maskgit.sampling.span_scoring, SpanScoring::mean);
  EXPECT_EQ(config.maskgit.condition_tokens, 0);
  EXPECT_EQ(config_to_json(config)["maskgit"]["steps"], 4);
}

TEST(ScheduleConfig, SamplingFromJsonReadsOverTheDefaultsOfItsKind) {
  ScheduleConfig trained;
  trained.kind = ScheduleKind::maskgit;
  trained.maskgit.sampling.steps = 8;
  trained.maskgit.sampling.choice_temperature = 3.0;

  const ScheduleSamplingOptions read =
      schedule_sampling_from_json(trained, nlohmann::json{{"steps", 4}, {"curve", "linear"}});
  const auto* maskgit = read.get<MaskGitSamplingOptions>();
  ASSERT_NE(maskgit, nullptr) << read.kind_name();
  EXPECT_EQ(maskgit->steps, 4);
  EXPECT_EQ(maskgit->curve, MaskingCurve::linear);
  EXPECT_EQ(maskgit->choice_temperature, 3.0);  // absent: the config's default

  // An option training fixed, a key that is no option, a value out of range, not an object.
  const std::string fixed = testing::error_message_of(
      [&] { schedule_sampling_from_json(trained, nlohmann::json{{"condition_tokens", 2}}); });
  EXPECT_NE(fixed.find("'condition_tokens'"), std::string::npos) << fixed;
  EXPECT_NE(fixed.find("fixed by training"), std::string::npos) << fixed;
  EXPECT_NE(fixed.find("steps, curve, choice_temperature, span_scoring"), std::string::npos)
      << fixed;
  const std::string unknown = testing::error_message_of(
      [&] { schedule_sampling_from_json(trained, nlohmann::json{{"stpes", 4}}); });
  EXPECT_NE(unknown.find("unknown key 'stpes'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("did you mean 'steps'"), std::string::npos) << unknown;
  const std::string zero = testing::error_message_of(
      [&] { schedule_sampling_from_json(trained, nlohmann::json{{"steps", 0}}); });
  EXPECT_NE(zero.find("steps must be >= 1"), std::string::npos) << zero;
  EXPECT_NE(testing::error_message_of([&] {
              schedule_sampling_from_json(trained, nlohmann::json::array({1, 2}));
            }).find("JSON object"),
            std::string::npos);

  // The order of a raster schedule is fixed by training.
  ScheduleConfig raster;
  raster.kind = ScheduleKind::raster;
  const std::string order = testing::error_message_of(
      [&] { schedule_sampling_from_json(raster, nlohmann::json{{"order", "halton"}}); });
  EXPECT_NE(order.find("'order' of the raster schedule is fixed by training"), std::string::npos)
      << order;

  // Hi-MAR's two phases have their own step counts.
  ScheduleConfig hi_mar;
  hi_mar.kind = ScheduleKind::hi_mar;
  const ScheduleSamplingOptions fewer = schedule_sampling_from_json(
      hi_mar, nlohmann::json{{"pivot_steps", 2}, {"dense_steps", 5}});
  ASSERT_NE(fewer.get<HiMarSamplingOptions>(), nullptr);
  EXPECT_EQ(fewer.get<HiMarSamplingOptions>()->pivot_steps, 2);
  EXPECT_EQ(fewer.get<HiMarSamplingOptions>()->dense_steps, 5);
  EXPECT_EQ(fewer.get<HiMarSamplingOptions>()->curve, hi_mar.hi_mar.sampling.curve);
}

TEST(ScheduleConfig, SamplingDefaultsAreSetOnlyForTheirKind) {
  ScheduleConfig trained;
  trained.kind = ScheduleKind::mar;
  trained.mar.buffer_size = 8;
  trained.mar.sampling.steps = 8;

  ScheduleConfig changed = trained;
  set_sampling_defaults(changed, MarSamplingOptions{.steps = 4, .curve = MaskingCurve::linear});
  EXPECT_EQ(changed.mar.sampling.steps, 4);
  EXPECT_EQ(changed.mar.sampling.curve, MaskingCurve::linear);
  EXPECT_EQ(changed.mar.buffer_size, 8);
  set_sampling_defaults(changed, ScheduleSamplingOptions{});  // empty: nothing changes
  EXPECT_EQ(changed.mar.sampling.steps, 4);

  const std::string other = testing::error_message_of(
      [&] { set_sampling_defaults(changed, MaskGitSamplingOptions{.steps = 2}); });
  EXPECT_NE(other.find("the mar schedule was given the sampling options of the maskgit schedule"),
            std::string::npos)
      << other;
  EXPECT_EQ(changed.mar.sampling.steps, 4);
}

}  // namespace
}  // namespace tessera
