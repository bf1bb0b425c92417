#pragma once
// Sampling settings changed without retraining: a JSON merge patch (RFC 7386) over a generator's
// sampling defaults, as `tessera sample` / `tessera eval` take it for one run and `tessera convert`
// stores it as a file's new defaults:
//
//   {"guidance": {"scale": 4}, "head": {"temperature": 0.9}, "schedule": {"steps": 4}}
//
// "guidance" and "head" patch GenerationOptions (GeneratorConfig::sampling, what every sample call
// takes); "schedule" patches the sampling options of the generator's schedule section — MaskGIT's
// and MAR's steps, Hi-MAR's pivot and dense steps, ... (schedule_sampling_options) — which the
// reference implementations also take at sampling time (MaskGIT's and MAR's num_iter).

#include <string>

#include "tessera/pipeline/generator.h"
#include "tessera/schedule/schedule.h"
#include "tessera/schedule/schedule_config.h"

namespace tessera {

struct SamplingSettings {
  GenerationOptions options{};  ///< GeneratorConfig::sampling's part
  ScheduleConfig schedule{};  ///< the schedule, with its sampling options patched
};  ///< What a sampling patch changes: a generator's sampling defaults and its schedule.

/// `sampling` with `patch` applied as a JSON merge patch, e.g. {"guidance": {"scale": 4.0}}.
/// Throws tessera::Error naming the option for an unknown key or an out-of-range value.
GenerationOptions patched_sampling(const GenerationOptions& sampling, const std::string& patch);

/// A generator's sampling defaults and schedule with `patch` applied: "schedule" goes through
/// patched_schedule_sampling, the rest through patched_sampling. Apply the schedule with
/// Generator::set_schedule_config (which also checks it fits the models) and pass the options as
/// SampleRequest::options. Throws tessera::Error naming what is wrong.
SamplingSettings patched_sampling_settings(const GeneratorConfig& config, const std::string& patch);

}  // namespace tessera
