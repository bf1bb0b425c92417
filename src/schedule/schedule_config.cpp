#include "tessera/schedule/schedule_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {

namespace {

// Applies `f` to the sampling defaults of config.kind's section.
template <class F>
decltype(auto) with_sampling_defaults(ScheduleConfig& config, F&& f) {
  switch (config.kind) {
    case ScheduleKind::raster:
      return f(config.raster.sampling);
    case ScheduleKind::maskgit:
      return f(config.maskgit.sampling);
    case ScheduleKind::mar:
      return f(config.mar.sampling);
    case ScheduleKind::next_scale:
      return f(config.next_scale.sampling);
    case ScheduleKind::hmar:
      return f(config.hmar.sampling);
    case ScheduleKind::hi_mar:
      return f(config.hi_mar.sampling);
    case ScheduleKind::continuous_next_scale:
      return f(config.continuous_next_scale.sampling);
  }
  TESSERA_FAIL("unknown schedule kind {}", static_cast<int>(config.kind));
}

}  // namespace

std::string schedule_kind_name(ScheduleKind kind) {
  nlohmann::json name;
  config_detail::write_value(name, kind);
  return name.get<std::string>();
}

ScheduleSamplingOptions sampling_defaults(const ScheduleConfig& config) {
  ScheduleConfig copy = config;
  return with_sampling_defaults(copy,
                                [](const auto& defaults) { return ScheduleSamplingOptions(defaults); });
}

void set_sampling_defaults(ScheduleConfig& config, const ScheduleSamplingOptions& options) {
  if (options.empty()) return;
  const std::string kind = schedule_kind_name(config.kind);
  with_sampling_defaults(config, [&](auto& defaults) {
    defaults = resolve_sampling(options, defaults, kind.c_str());
  });
}

ScheduleSamplingOptions schedule_sampling_from_json(const ScheduleConfig& config,
                                                    const nlohmann::json& json,
                                                    const std::string& path) {
  const std::string kind = schedule_kind_name(config.kind);
  TESSERA_CHECK(json.is_object(),
                "{}: the schedule's sampling options must be a JSON object such as "
                "{{\"steps\": 4}}, got {}",
                path, config_detail::json_excerpt(json));
  ScheduleSamplingOptions options = sampling_defaults(config);
  config_detail::KeyCollector sampling_keys;
  options.visit(sampling_keys);
  const std::vector<std::string>& names = sampling_keys.names;
  const nlohmann::json section = config_to_json(config)[kind];
  for (const auto& item : json.items()) {
    if (std::find(names.begin(), names.end(), item.key()) != names.end() ||
        !section.contains(item.key())) {
      continue;
    }
    TESSERA_FAIL("{}: schedule option '{}' of the {} schedule is fixed by training; sampling "
                 "may change the {} schedule's {}",
                 path, item.key(), kind, kind, fmt::join(names, ", "));
  }
  // The config reader refuses the keys the kind does not know, naming them and the known ones.
  config_detail::read_value(json, options, path);
  return options;
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
