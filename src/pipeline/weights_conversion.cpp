#include "tessera/pipeline/weights_conversion.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <utility>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/safetensors.h"

namespace tessera {

namespace {

// The tensors of `all` under `prefix` ("ema/", "param/"), prefix removed.
std::map<std::string, at::Tensor> with_prefix_removed(const std::map<std::string, at::Tensor>& all,
                                                      const std::string& prefix) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : all) {
    if (name.starts_with(prefix)) out.emplace(name.substr(prefix.size()), tensor);
  }
  return out;
}

const std::string& required_metadata(const SafetensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  TESSERA_CHECK(it != file.metadata().end(),
                "{}: no '{}' in its metadata (not a checkpoint written by `tessera train`)",
                file.path().string(), key);
  return it->second;
}

}  // namespace

at::ScalarType parse_stored_dtype(const std::string& name) {
  if (name == "bf16" || name == "BF16") return at::kBFloat16;
  if (name == "fp16" || name == "F16") return at::kHalf;
  if (name == "fp32" || name == "F32") return at::kFloat;
  TESSERA_FAIL("unknown dtype '{}': expected bf16, fp16 or fp32", name);
}

CastReport cast_weights_file(const std::filesystem::path& in, const std::filesystem::path& out,
                             at::ScalarType dtype) {
  TESSERA_CHECK(at::isFloatingType(dtype), "cast_weights_file: {} is not a floating dtype", dtype);
  CastReport report;
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  {
    // Copies, not views of the mapping: `out` may be `in`, whose mapping the rename replaces.
    const SafetensorsFile file = SafetensorsFile::open(in);
    metadata = file.metadata();
    for (auto& [name, tensor] : file.all()) {
      report.bytes_before += static_cast<int64_t>(tensor.nbytes());
      at::Tensor converted = at::isFloatingType(tensor.scalar_type()) &&
                                     tensor.scalar_type() != dtype
                                 ? tensor.to(dtype)
                                 : tensor.clone();
      if (converted.scalar_type() != tensor.scalar_type()) ++report.cast;
      report.bytes_after += static_cast<int64_t>(converted.nbytes());
      tensors.emplace(name, std::move(converted));
    }
  }
  report.tensors = static_cast<int64_t>(tensors.size());
  metadata["tessera.stored_dtype"] = std::string(safetensors_dtype_name(dtype));
  save_safetensors(out, tensors, metadata);
  return report;
}

GenerationOptions patched_sampling(const GenerationOptions& sampling, const std::string& patch) {
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
  nlohmann::json merged = config_to_json(sampling);
  merged.merge_patch(patch_json);
  auto out = config_from_json<GenerationOptions>(merged, "sampling");
  out.head.validate();
  out.guidance.validate();
  return out;
}

GenerationOptions set_generator_sampling(const std::filesystem::path& path,
                                         const std::string& patch) {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    metadata = file.metadata();
    for (auto& [name, tensor] : file.all()) tensors.emplace(name, tensor.clone());
  }
  const auto it = metadata.find("tessera.generator_config");
  TESSERA_CHECK(it != metadata.end(), "{}: no 'tessera.generator_config' in its metadata (not a "
                "generator file)", path.string());
  auto config = config_from_json<GeneratorConfig>(nlohmann::json::parse(it->second),
                                                  "generator_config");
  config.sampling = patched_sampling(config.sampling, patch);
  it->second = config_to_json(config).dump();
  save_safetensors(path, tensors, metadata);
  return config.sampling;
}

int64_t checkpoint_step(const std::filesystem::path& checkpoint) {
  const SafetensorsFile file = SafetensorsFile::open(checkpoint);
  const std::string& step = required_metadata(file, "tessera.step");
  try {
    return std::stoll(step);
  } catch (const std::exception&) {
    TESSERA_FAIL("{}: its 'tessera.step' metadata '{}' is not an integer", checkpoint.string(),
                 step);
  }
}

Generator generator_from_checkpoint(const std::filesystem::path& checkpoint,
                                    std::shared_ptr<Tokenizer> tokenizer,
                                    CheckpointWeights weights) {
  const SafetensorsFile file = SafetensorsFile::open(checkpoint);
  const std::string& config_text = required_metadata(file, "tessera.generator_config");
  GeneratorConfig config;
  try {
    config = config_from_json<GeneratorConfig>(nlohmann::json::parse(config_text),
                                               "generator_config");
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("{}: its 'tessera.generator_config' metadata is not valid JSON: {}",
                 checkpoint.string(), e.what());
  }
  const std::string prefix = weights == CheckpointWeights::ema ? "ema/" : "param/";
  const std::map<std::string, at::Tensor> parameters =
      with_prefix_removed(file.all(), prefix);
  TESSERA_CHECK(!parameters.empty(),
                "{}: no '{}' tensors ({}); {}", checkpoint.string(), prefix,
                weights == CheckpointWeights::ema ? "EMA weights were asked for"
                                                  : "trained weights were asked for",
                weights == CheckpointWeights::ema
                    ? "the run had EMA disabled: ask for the trained weights instead"
                    : "not a training checkpoint");
  Generator generator(config, std::move(tokenizer));
  generator.load_trainable_parameters(parameters);
  generator.set_training(false);
  return generator;
}

}  // namespace tessera
