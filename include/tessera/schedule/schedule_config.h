#pragma once
// Which schedule a generator uses, as a JSON-mappable value (what a generator checkpoint records),
// and the factory that builds it.
//
//   {"kind": "maskgit", "maskgit": {"steps": 8, "choice_temperature": 4.5}}
//
// Only the section of the chosen kind is read; the others keep their defaults (and are written
// back with them, so a saved config shows every option).

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

/// The options of a kind's section that sampling may change without retraining; every other
/// option is fixed by training (the sequence layout, the order, what the backbone learned to read):
///   raster                 kv_cache
///   maskgit                steps, curve, choice_temperature, span_scoring
///   mar                    steps, curve
///   next_scale             use_kv_cache
///   hmar                   refinement_steps, refinement_curve, refinement_guidance, mask_schedule
///   hi_mar                 pivot_steps, dense_steps, curve
///   continuous_next_scale  use_kv_cache
std::vector<std::string> schedule_sampling_options(ScheduleKind kind);

/// `config` with `patch` (a JSON object, e.g. {"steps": 4}) merged (RFC 7386) into the section of
/// its kind. Throws tessera::Error naming a key that is not one of schedule_sampling_options —
/// an option fixed by training, or no option at all — and an out-of-range value.
ScheduleConfig patched_schedule_sampling(const ScheduleConfig& config, const nlohmann::json& patch);

/// Throws tessera::Error unless `changed` is `trained` with only sampling options of its kind
/// changed (same kind; the sections of other kinds are never read and are not compared).
void check_schedule_sampling_change(const ScheduleConfig& trained, const ScheduleConfig& changed);

/// The schedule of config.kind, built from its section. Throws tessera::Error for an invalid
/// section (each schedule validates its own config).
std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config);

}  // namespace tessera
