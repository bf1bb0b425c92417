#include "tessera/pipeline/sampling_patch.h"

#include <nlohmann/json.hpp>

#include "tessera/core/config.h"
#include "tessera/core/error.h"

namespace tessera {

namespace {

nlohmann::json parsed_patch(const std::string& patch) {
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
  return patch_json;
}

GenerationOptions merged_options(const GenerationOptions& sampling, const nlohmann::json& patch) {
  nlohmann::json merged = config_to_json(sampling);
  merged.merge_patch(patch);
  auto out = config_from_json<GenerationOptions>(merged, "sampling");
  out.head.validate();
  out.guidance.validate();
  return out;
}

}  // namespace

GenerationOptions patched_sampling(const GenerationOptions& sampling, const std::string& patch) {
  return merged_options(sampling, parsed_patch(patch));
}

SamplingSettings patched_sampling_settings(const GeneratorConfig& config,
                                           const std::string& patch) {
  nlohmann::json patch_json = parsed_patch(patch);
  SamplingSettings settings{.options = config.sampling, .schedule = config.schedule};
  if (const auto it = patch_json.find("schedule"); it != patch_json.end()) {
    settings.schedule = patched_schedule_sampling(config.schedule, *it);
    patch_json.erase(it);
  }
  settings.options = merged_options(config.sampling, patch_json);
  return settings;
}

}  // namespace tessera
