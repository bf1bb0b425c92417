#pragma once
// Which schedule a generator uses, as a JSON-mappable value (what a generator checkpoint records),
// and the factory that builds it.
//
//   {"kind": "maskgit", "maskgit": {"steps": 8, "choice_temperature": 4.5}}
//
// Only the section of the chosen kind is read; the others keep their defaults (and are written
// back with them, so a saved config shows every option). A section's sampling options (steps,
// curve, ...: schedule_sampling.h) are the defaults of a request; a request may override them
// (GenerationOptions::schedule) without rebuilding the schedule.

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/schedule/continuous_next_scale_schedule.h"
#include "tessera/schedule/hi_mar_schedule.h"
#include "tessera/schedule/hmar_schedule.h"
#include "tessera/schedule/mar_schedule.h"
#include "tessera/schedule/maskgit_schedule.h"
#include "tessera/schedule/next_scale_schedule.h"
#include "tessera/schedule/raster_schedule.h"
#include "tessera/schedule/schedule.h"

namespace tessera {
/// Which schedule a ScheduleConfig builds.
enum class ScheduleKind { raster, maskgit, mar, next_scale, hmar, hi_mar, continuous_next_scale };

template <>
struct ConfigEnum<ScheduleKind> {  /// Each value with its name.
  static constexpr std::pair<ScheduleKind, const char*> values[] = {
      {ScheduleKind::raster, "raster"},         {ScheduleKind::maskgit, "maskgit"},
      {ScheduleKind::mar, "mar"},               {ScheduleKind::next_scale, "next_scale"},
      {ScheduleKind::hmar, "hmar"},             {ScheduleKind::hi_mar, "hi_mar"},
      {ScheduleKind::continuous_next_scale, "continuous_next_scale"}};
};  ///< The names of ScheduleKind values in JSON configs.

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::maskgit;  ///< which schedule
  RasterScheduleConfig raster{};  ///< for kind raster
  MaskGitScheduleConfig maskgit{};  ///< for kind maskgit
  MarScheduleConfig mar{};  ///< for kind mar
  NextScaleScheduleConfig next_scale{};  ///< for kind next_scale
  HmarScheduleConfig hmar{};  ///< for kind hmar
  HiMarScheduleConfig hi_mar{};  ///< for kind hi_mar
  ContinuousNextScaleScheduleConfig continuous_next_scale{};  ///< for kind continuous_next_scale

  template <class Visitor>
  void visit(Visitor& v) {
    v("kind", kind);
    v("raster", raster);
    v("maskgit", maskgit);
    v("mar", mar);
    v("next_scale", next_scale);
    v("hmar", hmar);
    v("hi_mar", hi_mar);
    v("continuous_next_scale", continuous_next_scale);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};  ///< A schedule's kind and options (the options of other kinds are ignored).

/// The name of a kind ("maskgit"), which is also the key of its section.
std::string schedule_kind_name(ScheduleKind kind);

/// The sampling defaults of config.kind's section (its `sampling` member), as a request's value.
ScheduleSamplingOptions sampling_defaults(const ScheduleConfig& config);

/// Replaces the sampling defaults of config.kind's section by `options` (what `tessera convert
/// --sampling` stores). Throws tessera::Error for options of another kind; empty options change
/// nothing.
void set_sampling_defaults(ScheduleConfig& config, const ScheduleSamplingOptions& options);

/// The sampling options of config.kind read from `json` (e.g. {"steps": 4}) over the section's
/// defaults: absent keys keep them. Throws tessera::Error naming the key for a key that is an
/// option fixed by training (the order, the layout, ...) or no option of the kind at all (the
/// config reader's message, rooted at `path`), and for a value out of range.
ScheduleSamplingOptions schedule_sampling_from_json(const ScheduleConfig& config,
                                                    const nlohmann::json& json,
                                                    const std::string& path = "schedule");

/// The schedule of config.kind, built from its section. Throws tessera::Error for an invalid
/// section (each schedule validates its own config).
std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config);

}  // namespace tessera
