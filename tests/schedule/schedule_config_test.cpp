// Schedule sampling options: which options of each kind may change without retraining, patches
// that change them (and refuse, by name, the options training fixed), and the check a generator
// runs before it takes a new schedule config.
#include "tessera/schedule/schedule_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

#include "common/error_message.h"
#include "tessera/core/config.h"

namespace tessera {
namespace {

// A rename of a field would otherwise leave a sampling option that no patch can reach.
TEST(ScheduleConfig, EverySamplingOptionIsAnOptionOfItsKind) {
  for (const auto& [kind, name] : ConfigEnum<ScheduleKind>::values) {
    const nlohmann::json section = config_to_json(ScheduleConfig{})[name];
    ASSERT_TRUE(section.is_object()) << name;
    for (const std::string& option : schedule_sampling_options(kind)) {
      EXPECT_TRUE(section.contains(option)) << name << "." << option;
    }
  }
}

TEST(ScheduleConfig, SamplingPatchChangesOnlyItsKindsSamplingOptions) {
  ScheduleConfig trained;
  trained.kind = ScheduleKind::maskgit;
  trained.maskgit.steps = 8;
  trained.maskgit.choice_temperature = 4.5;
  trained.maskgit.condition_tokens = 1;

  const ScheduleConfig patched =
      patched_schedule_sampling(trained, nlohmann::json{{"steps", 4}, {"curve", "linear"}});
  ScheduleConfig expected = trained;
  expected.maskgit.steps = 4;
  expected.maskgit.curve = MaskingCurve::linear;
  EXPECT_EQ(config_to_json(patched), config_to_json(expected));
  EXPECT_NO_THROW(check_schedule_sampling_change(trained, patched));

  // An option training fixed, a key that is no option, a value out of range, not an object.
  const std::string fixed = testing::error_message_of(
      [&] { patched_schedule_sampling(trained, nlohmann::json{{"condition_tokens", 2}}); });
  EXPECT_NE(fixed.find("'condition_tokens'"), std::string::npos) << fixed;
  EXPECT_NE(fixed.find("fixed by training"), std::string::npos) << fixed;
  EXPECT_NE(fixed.find("steps, curve, choice_temperature, span_scoring"), std::string::npos)
      << fixed;
  const std::string unknown = testing::error_message_of(
      [&] { patched_schedule_sampling(trained, nlohmann::json{{"stpes", 4}}); });
  EXPECT_NE(unknown.find("'stpes' is not an option of the maskgit schedule"), std::string::npos)
      << unknown;
  const std::string zero = testing::error_message_of(
      [&] { patched_schedule_sampling(trained, nlohmann::json{{"steps", 0}}); });
  EXPECT_NE(zero.find("steps must be >= 1"), std::string::npos) << zero;
  EXPECT_NE(testing::error_message_of([&] {
              patched_schedule_sampling(trained, nlohmann::json::array({1, 2}));
            }).find("JSON object"),
            std::string::npos);

  // Hi-MAR's two phases have their own step counts.
  ScheduleConfig hi_mar;
  hi_mar.kind = ScheduleKind::hi_mar;
  const ScheduleConfig fewer = patched_schedule_sampling(
      hi_mar, nlohmann::json{{"pivot_steps", 2}, {"dense_steps", 5}});
  EXPECT_EQ(fewer.hi_mar.pivot_steps, 2);
  EXPECT_EQ(fewer.hi_mar.dense_steps, 5);
  EXPECT_EQ(fewer.hi_mar.buffer_size, hi_mar.hi_mar.buffer_size);
}

TEST(ScheduleConfig, ChangeCheckRefusesWhatTrainingFixed) {
  ScheduleConfig trained;
  trained.kind = ScheduleKind::mar;
  trained.mar.buffer_size = 8;
  trained.mar.steps = 8;

  ScheduleConfig sampling_only = trained;
  sampling_only.mar.steps = 4;
  sampling_only.maskgit.condition_tokens = 3;  // another kind's section is never read
  EXPECT_NO_THROW(check_schedule_sampling_change(trained, sampling_only));

  ScheduleConfig buffer = trained;
  buffer.mar.buffer_size = 16;
  const std::string message =
      testing::error_message_of([&] { check_schedule_sampling_change(trained, buffer); });
  EXPECT_NE(message.find("'buffer_size' of the mar schedule is fixed by training (trained with 8, "
                         "asked for 16)"),
            std::string::npos)
      << message;

  ScheduleConfig kind = trained;
  kind.kind = ScheduleKind::maskgit;
  EXPECT_NE(testing::error_message_of([&] { check_schedule_sampling_change(trained, kind); })
                .find("the schedule is mar"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
