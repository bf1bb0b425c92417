#include "tessera/schedule/schedule_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "tessera/core/error.h"

namespace tessera {

namespace {

// The name of a kind, which is also the key of its section.
std::string kind_name(ScheduleKind kind) {
  nlohmann::json name;
  config_detail::write_value(name, kind);
  return name.get<std::string>();
}

bool is_sampling_option(ScheduleKind kind, const std::string& key) {
  const std::vector<std::string> options = schedule_sampling_options(kind);
  return std::find(options.begin(), options.end(), key) != options.end();
}

}  // namespace

std::vector<std::string> schedule_sampling_options(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::raster:
      return {"kv_cache"};
    case ScheduleKind::maskgit:
      return {"steps", "curve", "choice_temperature", "span_scoring"};
    case ScheduleKind::mar:
      return {"steps", "curve"};
    case ScheduleKind::next_scale:
      return {"use_kv_cache"};
    case ScheduleKind::hmar:
      return {"refinement_steps", "refinement_curve", "refinement_guidance", "mask_schedule"};
    case ScheduleKind::hi_mar:
      return {"pivot_steps", "dense_steps", "curve"};
    case ScheduleKind::continuous_next_scale:
      return {"use_kv_cache"};
  }
  TESSERA_CHECK(false, "schedule_sampling_options: unknown schedule kind {}",
                static_cast<int>(kind));
  return {};
}

ScheduleConfig patched_schedule_sampling(const ScheduleConfig& config,
                                         const nlohmann::json& patch) {
  const std::string kind = kind_name(config.kind);
  TESSERA_CHECK(patch.is_object(),
                "schedule sampling options must be a JSON object such as {{\"steps\": 4}}, got {}",
                config_detail::json_excerpt(patch));
  nlohmann::json whole = config_to_json(config);
  for (const auto& item : patch.items()) {
    if (is_sampling_option(config.kind, item.key())) continue;
    TESSERA_FAIL("schedule option '{}' {}; sampling may change the {} schedule's {}", item.key(),
                 whole[kind].contains(item.key())
                     ? fmt::format("of the {} schedule is fixed by training", kind)
                     : fmt::format("is not an option of the {} schedule", kind),
                 kind, fmt::join(schedule_sampling_options(config.kind), ", "));
  }
  whole[kind].merge_patch(patch);
  return config_from_json<ScheduleConfig>(whole, "schedule");
}

void check_schedule_sampling_change(const ScheduleConfig& trained, const ScheduleConfig& changed) {
  const std::string kind = kind_name(trained.kind);
  TESSERA_CHECK(changed.kind == trained.kind,
                "the schedule is {}; sampling cannot change it to {} (the kind is fixed by "
                "training)",
                kind, kind_name(changed.kind));
  const nlohmann::json before = config_to_json(trained)[kind];
  const nlohmann::json after = config_to_json(changed)[kind];
  for (const auto& item : before.items()) {
    TESSERA_CHECK(is_sampling_option(trained.kind, item.key()) || after[item.key()] == item.value(),
                  "schedule option '{}' of the {} schedule is fixed by training (trained with {}, "
                  "asked for {}); sampling may change {}",
                  item.key(), kind, item.value().dump(), after[item.key()].dump(),
                  fmt::join(schedule_sampling_options(trained.kind), ", "));
  }
}

std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config) {
  switch (config.kind) {
    case ScheduleKind::raster:
      return std::make_unique<RasterSchedule>(config.raster);
    case ScheduleKind::maskgit:
      return std::make_unique<MaskGitSchedule>(config.maskgit);
    case ScheduleKind::mar:
      return std::make_unique<MarSchedule>(config.mar);
    case ScheduleKind::next_scale:
      return std::make_unique<NextScaleSchedule>(config.next_scale);
    case ScheduleKind::hmar:
      return std::make_unique<HmarSchedule>(config.hmar);
    case ScheduleKind::hi_mar:
      return std::make_unique<HiMarSchedule>(config.hi_mar);
    case ScheduleKind::continuous_next_scale:
      return std::make_unique<ContinuousNextScaleSchedule>(config.continuous_next_scale);
  }
  TESSERA_CHECK(false, "make_schedule: unknown schedule kind {}", static_cast<int>(config.kind));
  return nullptr;
}

}  // namespace tessera
