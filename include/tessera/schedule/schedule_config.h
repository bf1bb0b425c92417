#pragma once
// Which schedule a generator uses, as a JSON-mappable value (what a generator checkpoint records),
// and the factory that builds it.
//
//   {"kind": "maskgit", "maskgit": {"steps": 8, "choice_temperature": 4.5}}
//
// Only the section of the chosen kind is read; the others keep their defaults (and are written
// back with them, so a saved config shows every option).

#include <memory>
#include <string>
#include <utility>

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

/// The schedule of config.kind, built from its section. Throws tessera::Error for an invalid
/// section (each schedule validates its own config).
std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config);

}  // namespace tessera
