#include "tessera/compat/weights_conversion.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <utility>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/io/safetensors.h"

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

// Every tensor of `path` as an owned copy, not a view of the file's mapping (the rewrite may
// replace `path` itself), with the metadata.
struct FileCopy {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

FileCopy read_file_copy(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  FileCopy copy{{}, file.metadata()};
  for (auto& [name, tensor] : file.all()) copy.tensors.emplace(name, tensor.clone());
  return copy;
}

GeneratorConfig parse_generator_config(const std::filesystem::path& path, const std::string& text) {
  try {
    return config_from_json<GeneratorConfig>(nlohmann::json::parse(text), "generator_config");
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("{}: its 'tessera.generator_config' metadata is not valid JSON: {}",
                 path.string(), e.what());
  }
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
  FileCopy file = read_file_copy(in);
  for (auto& [name, tensor] : file.tensors) {
    report.bytes_before += static_cast<int64_t>(tensor.nbytes());
    if (at::isFloatingType(tensor.scalar_type()) && tensor.scalar_type() != dtype) {
      tensor = tensor.to(dtype);
      ++report.cast;
    }
    report.bytes_after += static_cast<int64_t>(tensor.nbytes());
  }
  report.tensors = static_cast<int64_t>(file.tensors.size());
  file.metadata["tessera.stored_dtype"] = std::string(safetensors_dtype_name(dtype));
  save_safetensors(out, file.tensors, file.metadata);
  return report;
}

GenerationOptions set_generator_sampling(const std::filesystem::path& path,
                                         const std::string& patch) {
  FileCopy file = read_file_copy(path);
  const auto it = file.metadata.find("tessera.generator_config");
  TESSERA_CHECK(it != file.metadata.end(),
                "{}: no 'tessera.generator_config' in its metadata (not a generator file)",
                path.string());
  GeneratorConfig config = parse_generator_config(path, it->second);
  const GenerationOptions options = sampling_request(config, patch);
  const GeneratorConfig patched = with_sampling_defaults(config, options);
  if (config_to_json(patched.schedule) != config_to_json(config.schedule)) {
    // New schedule options must fit the models (MaskGIT's steps within the token count) before
    // the file is rewritten.
    Generator::load(path).check_options(options);
  }
  it->second = config_to_json(patched).dump();
  save_safetensors(path, file.tensors, file.metadata);
  return default_request(patched);
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
  const GeneratorConfig config =
      parse_generator_config(checkpoint, required_metadata(file, "tessera.generator_config"));
  // A generator file carries tessera.generator_config too; without this check it would be
  // reported as a checkpoint of a run with EMA disabled.
  TESSERA_CHECK(file.metadata().contains("tessera.format"),
                "{}: not a training checkpoint (no 'tessera.format' in its metadata); it is a "
                "generator file, which `tessera sample --model` reads as it is (`tessera convert "
                "--in` casts it)",
                checkpoint.string());
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
