#include "tessera/pipeline/sampling_request.h"

#include <utility>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/schedule/schedule_config.h"

namespace tessera {

GenerationOptions default_request(const GeneratorConfig& config) {
  GenerationOptions options = config.sampling;
  options.schedule = sampling_defaults(config.schedule);
  return options;
}

GenerationOptions sampling_request(const GeneratorConfig& config, const nlohmann::json& patch) {
  TESSERA_CHECK(patch.is_object(),
                "sampling options must be a JSON object such as {{\"guidance\": {{\"scale\": 4}}}}, "
                "got '{}'",
                config_detail::json_excerpt(patch));
  nlohmann::json rest = patch;
  ScheduleSamplingOptions schedule = sampling_defaults(config.schedule);
  if (const auto it = rest.find("schedule"); it != rest.end()) {
    schedule = schedule_sampling_from_json(config.schedule, *it, "sampling.schedule");
    rest.erase(it);
  }
  nlohmann::json merged = config_to_json(config.sampling);
  merged.merge_patch(rest);
  GenerationOptions options = config_from_json<GenerationOptions>(merged, "sampling");
  options.head.validate();
  options.guidance.validate();
  options.schedule = std::move(schedule);
  return options;
}

GenerationOptions sampling_request(const GeneratorConfig& config, const std::string& patch) {
  nlohmann::json patch_json;
  try {
    patch_json = nlohmann::json::parse(patch);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("sampling options '{}' are not valid JSON: {}", patch, e.what());
  }
  TESSERA_CHECK(patch_json.is_object(),
                "sampling options must be a JSON object such as {{\"guidance\": {{\"scale\": 4}}}}, "
                "got '{}'",
                patch);
  return sampling_request(config, patch_json);
}

GeneratorConfig with_sampling_defaults(GeneratorConfig config, const GenerationOptions& options) {
  set_sampling_defaults(config.schedule, options.schedule);
  config.sampling.guidance = options.guidance;
  config.sampling.head = options.head;
  return config;
}

}  // namespace tessera
