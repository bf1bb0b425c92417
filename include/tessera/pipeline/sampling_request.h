#pragma once
// A sampling request from JSON: a merge patch (RFC 7386) over a generator's sampling defaults, as
// `tessera sample` / `tessera eval` take it for one run and `tessera convert` stores it as a
// file's new defaults:
//
//   {"guidance": {"scale": 4}, "head": {"temperature": 0.9}, "schedule": {"steps": 4}}
//
// "guidance" and "head" patch GenerationOptions over GeneratorConfig::sampling; "schedule" is
// read onto the sampling options of the generator's schedule kind (schedule_sampling.h: MaskGIT's
// and MAR's steps, Hi-MAR's pivot and dense steps, ...) over the defaults its schedule section
// records, which the reference implementations also take at sampling time (MaskGIT's and MAR's
// num_iter). The result is a plain value: pass it as SampleRequest::options; nothing about the
// generator changes.
//
//   const GenerationOptions options = sampling_request(generator.config(), R"({"schedule": {"steps": 4}})");
//   generator.sample(labels, {.seed = 7, .options = options});

#include <nlohmann/json.hpp>

#include <string>

#include "tessera/pipeline/generator.h"
#include "tessera/schedule/schedule.h"

namespace tessera {

/// A generator's sampling defaults as a full request: GeneratorConfig::sampling with the schedule
/// section's sampling defaults in `schedule`.
GenerationOptions default_request(const GeneratorConfig& config);

/// default_request(config) with `patch` applied (see the file's top comment). Throws
/// tessera::Error naming the key for an unknown key (the schedule's included: {"schedule":
/// {"bogus": 1}}), a schedule option fixed by training ({"schedule": {"order": ...}}), a value of
/// the wrong type or out of range, and for a patch that is not a JSON object. Whether schedule
/// options fit the generator's grids (MaskGIT's steps at most its tokens) is
/// Generator::check_options's (and sample's) check.
GenerationOptions sampling_request(const GeneratorConfig& config, const nlohmann::json& patch);
/// The same from JSON text; a syntax error is a tessera::Error quoting the text.
GenerationOptions sampling_request(const GeneratorConfig& config, const std::string& patch);
/// The same from a string literal (which would otherwise convert to both JSON and text).
inline GenerationOptions sampling_request(const GeneratorConfig& config, const char* patch) {
  return sampling_request(config, std::string(patch));
}

/// `config` with `options` as its sampling defaults: GeneratorConfig::sampling takes guidance and
/// head, the schedule section's sampling defaults the schedule options (when not empty). Throws
/// tessera::Error for schedule options of another kind.
GeneratorConfig with_sampling_defaults(GeneratorConfig config, const GenerationOptions& options);

}  // namespace tessera
