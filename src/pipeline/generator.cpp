#include "tessera/pipeline/generator.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/autocast.h"
#include "tessera/nn/int8_linear.h"
#include "tessera/tokenizer/thread_invariant_decode.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {

namespace {

constexpr const char* kGeneratorConfigKey = "tessera.generator_config";
constexpr const char* kTokenizerConfigKey = "tessera.tokenizer_config";

// The entries of `tensors` whose key starts with `prefix`, with the prefix removed.
std::map<std::string, at::Tensor> strip_prefix(const std::map<std::string, at::Tensor>& tensors,
                                               std::string_view prefix) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : tensors) {
    if (std::string_view(name).substr(0, prefix.size()) == prefix) {
      out.emplace(name.substr(prefix.size()), tensor);
    }
  }
  return out;
}

void add_prefixed(std::map<std::string, at::Tensor>& out, std::string_view prefix,
                  const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& [name, tensor] : tensors) out.emplace(std::string(prefix) + name, tensor);
}

nlohmann::json parse_metadata_json(const SafetensorsFile& file, const char* key) {
  const auto it = file.metadata().find(key);
  TESSERA_CHECK(it != file.metadata().end(),
                "generator file {}: no '{}' in its metadata (not written by Generator::save)",
                file.path().string(), key);
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("generator file {}: the '{}' metadata is not valid JSON: {}",
                 file.path().string(), key, e.what());
  }
}

// A weights file may store floating-point tensors in any floating dtype (bf16 files load into fp32
// modules), but an integer or bool tensor where the model holds floats (or the reverse) is a
// corrupt or foreign file: copy_ would convert it silently into meaningless weights.
void check_stored_dtypes(const std::filesystem::path& path,
                         const std::map<std::string, at::Tensor>& stored,
                         const std::map<std::string, at::Tensor>& model) {
  for (const auto& [name, tensor] : stored) {
    const auto it = model.find(name);
    if (it == model.end()) continue;  // unexpected names are reported by the loaders
    const at::Tensor& expected = it->second;
    const bool fits = expected.is_floating_point() ? tensor.is_floating_point()
                                                   : tensor.scalar_type() == expected.scalar_type();
    TESSERA_CHECK(fits, "generator file {}: tensor '{}' is stored as {}, but the model's is {}{}",
                  path.string(), name, tensor.scalar_type(), expected.scalar_type(),
                  expected.is_floating_point()
                      ? " (expected a floating-point dtype: F32, BF16, F16 or F64)"
                      : "");
  }
}

}  // namespace

Generator::Generator(GeneratorConfig config, std::shared_ptr<Tokenizer> tokenizer, uint64_t seed)
    : config_(std::move(config)),
      tokenizer_(std::move(tokenizer)),
      backbone_(config_.backbone, derive_seed(seed, 0)),
      head_(make_head(config_.head, derive_seed(seed, 1))),
      schedule_(make_schedule(config_.schedule)) {
  TESSERA_CHECK(tokenizer_ != nullptr, "Generator: a tokenizer is required");
  if (config_.decoder) {
    try {
      decoder_ = std::make_unique<Backbone>(*config_.decoder, derive_seed(seed, 2));
    } catch (const Error& e) {
      TESSERA_FAIL("Generator: decoder: {}", e.what());
    }
  }
  if (config_.refinement_head) {
    try {
      refinement_head_ = make_head(*config_.refinement_head, derive_seed(seed, 4));
    } catch (const Error& e) {
      TESSERA_FAIL("Generator: refinement_head: {}", e.what());
    }
  }
  TESSERA_CHECK(config_.image_channels == tokenizer_->image_channels(),
                "Generator: image_channels is {} but the tokenizer's images have {} channels",
                config_.image_channels, tokenizer_->image_channels());
  grids_ = tokenizer_->token_grids(config_.image_size, config_.image_size);
  schedule_->check_models(models(), grids_);
  // The defaults the file records must fit the models too (MaskGIT's steps within the tokens).
  check_options(config_.sampling);
  tokenizer_->set_training(false);
}

ScheduleModels Generator::models() {
  return {backbone_, *head_, tokenizer_.get(), decoder_.get(), refinement_head_.get()};
}

// The same checks Schedule::sample makes, through the same types, before any work.
void Generator::check_options(const GenerationOptions& options) const {
  (void)CheckedHeadOptions(options.guidance, options.head);
  schedule_->check_sampling(grids_, options);
}

Generator::~Generator() = default;
Generator::Generator(Generator&&) noexcept = default;
Generator& Generator::operator=(Generator&&) noexcept = default;

void Generator::save(const std::filesystem::path& path,
                     const std::map<std::string, std::string>& extra_metadata) const {
  TESSERA_CHECK(precision_ != InferencePrecision::int8,
                "Generator::save: the generator samples in int8 (set_precision), which keeps no "
                "float weights to save; load the file again, or set_precision(fp32) to save the "
                "int8-rounded weights");
  std::map<std::string, at::Tensor> tensors;
  add_prefixed(tensors, "tokenizer.", tokenizer_->state_dict());
  add_prefixed(tensors, "backbone.", backbone_.state_dict());
  if (decoder_) add_prefixed(tensors, "decoder.", decoder_->state_dict());
  add_prefixed(tensors, "head.", head_->state_dict());
  if (refinement_head_) add_prefixed(tensors, "refinement_head.", refinement_head_->state_dict());
  for (auto& [name, tensor] : tensors) tensor = tensor.detach();
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata[kGeneratorConfigKey] = config_to_json(config_).dump();
  metadata[kTokenizerConfigKey] = config_to_json(tokenizer_->config()).dump();
  save_safetensors(path, tensors, metadata);
}

Generator Generator::load(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto generator_config =
      config_from_json<GeneratorConfig>(parse_metadata_json(file, kGeneratorConfigKey),
                                        "generator_config");
  const auto tokenizer_config =
      config_from_json<TokenizerConfig>(parse_metadata_json(file, kTokenizerConfigKey),
                                        "tokenizer_config");
  const std::map<std::string, at::Tensor> tensors = file.all();
  std::shared_ptr<Tokenizer> tokenizer = make_tokenizer(tokenizer_config);
  // The parts' loaders name the tensors that do not fit, but not the file they came from.
  const auto in_file = [&](const auto& load) {
    try {
      load();
    } catch (const Error& e) {
      TESSERA_FAIL("generator file {}: {}", path.string(), e.what());
    }
  };
  std::map<std::string, at::Tensor> expected;
  add_prefixed(expected, "tokenizer.", tokenizer->state_dict());
  check_stored_dtypes(path, tensors, expected);
  in_file([&] { tokenizer->load_state_dict(strip_prefix(tensors, "tokenizer.")); });
  Generator generator(generator_config, std::move(tokenizer));
  add_prefixed(expected, "backbone.", generator.backbone_.state_dict());
  if (generator.decoder_) add_prefixed(expected, "decoder.", generator.decoder_->state_dict());
  add_prefixed(expected, "head.", generator.head_->state_dict());
  if (generator.refinement_head_) {
    add_prefixed(expected, "refinement_head.", generator.refinement_head_->state_dict());
  }
  check_stored_dtypes(path, tensors, expected);
  in_file([&] { generator.backbone_.load_state_dict(strip_prefix(tensors, "backbone.")); });
  if (generator.decoder_) {
    in_file([&] { generator.decoder_->load_state_dict(strip_prefix(tensors, "decoder.")); });
  }
  in_file([&] { generator.head_->load_state_dict(strip_prefix(tensors, "head.")); });
  if (generator.refinement_head_) {
    in_file([&] {
      generator.refinement_head_->load_state_dict(strip_prefix(tensors, "refinement_head."));
    });
  }
  for (const auto& [name, tensor] : tensors) {
    TESSERA_CHECK(name.starts_with("tokenizer.") || name.starts_with("backbone.") ||
                      name.starts_with("head.") ||
                      (generator.decoder_ && name.starts_with("decoder.")) ||
                      (generator.refinement_head_ && name.starts_with("refinement_head.")),
                  "generator file {}: unexpected tensor '{}' (expected the prefixes tokenizer., "
                  "backbone., {}head.{})",
                  path.string(), name, generator.decoder_ ? "decoder., " : "",
                  generator.refinement_head_ ? ", refinement_head." : "");
  }
  generator.set_training(false);
  return generator;
}

std::map<std::string, at::Tensor> Generator::trainable_parameters() const {
  std::map<std::string, at::Tensor> out;
  const auto backbone_params = backbone_.module()->named_parameters(/*recurse=*/true);
  for (const auto& item : backbone_params) out.emplace("backbone." + item.key(), item.value());
  if (decoder_) {
    const auto decoder_params = decoder_->module()->named_parameters(/*recurse=*/true);
    for (const auto& item : decoder_params) out.emplace("decoder." + item.key(), item.value());
  }
  const auto head_params = head_->module()->named_parameters(/*recurse=*/true);
  for (const auto& item : head_params) out.emplace("head." + item.key(), item.value());
  if (refinement_head_) {
    const auto params = refinement_head_->module()->named_parameters(/*recurse=*/true);
    for (const auto& item : params) out.emplace("refinement_head." + item.key(), item.value());
  }
  return out;
}

void Generator::load_trainable_parameters(const std::map<std::string, at::Tensor>& tensors) {
  TESSERA_CHECK(precision_ != InferencePrecision::int8,
                "Generator::load_trainable_parameters: the generator samples in int8 "
                "(set_precision); set_precision(fp32) first");
  std::map<std::string, at::Tensor> targets = trainable_parameters();
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, target] : targets) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != target.sizes()) {
      mismatched.push_back(fmt::format("{} (expected {}, got {})", name, target.sizes(),
                                       it->second.sizes()));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!targets.contains(name)) unexpected.push_back(name);
  }
  TESSERA_CHECK(missing.empty() && unexpected.empty() && mismatched.empty(),
                "Generator: parameters do not match: missing [{}], unexpected [{}], mismatched "
                "[{}]",
                fmt::join(missing, ", "), fmt::join(unexpected, ", "),
                fmt::join(mismatched, ", "));
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(tensors.at(name));
}

int64_t Generator::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : trainable_parameters()) total += tensor.numel();
  return total;
}

namespace {

void check_fp32_for_training(InferencePrecision precision, const char* what) {
  TESSERA_CHECK(precision == InferencePrecision::fp32,
                "Generator::{}: the generator samples in {} (set_precision); training needs fp32 "
                "weights, so load the file again",
                what, to_string(precision));
}

}  // namespace

void Generator::set_precision(InferencePrecision precision) {
  if (precision == InferencePrecision::int8) {
    // Checked before any weight changes, so a refusal leaves the generator as it was.
    TESSERA_CHECK(backbone_.device().is_cpu(),
                  "Generator::set_precision: int8 layers run on the CPU, the generator is on {}",
                  backbone_.device().str());
    TESSERA_CHECK(int8_linear_available(),
                  "Generator::set_precision: int8 layers need LibTorch's FBGEMM, which this "
                  "LibTorch build lacks");
  }
  const at::ScalarType dtype = matmul_dtype(precision);
  std::vector<torch::nn::Module*> transformer_parts{backbone_.module().get(), head_->module().get()};
  if (decoder_) transformer_parts.push_back(decoder_->module().get());
  if (refinement_head_) transformer_parts.push_back(refinement_head_->module().get());
  for (torch::nn::Module* part : transformer_parts) {
    dequantize_linear_weights(*part, dtype);  // from int8: float weights again, in `dtype`
    convert_matmul_weights(*part, dtype);
    if (precision == InferencePrecision::int8) quantize_linear_weights(*part);
  }
  convert_convolution_weights(tokenizer_->parameters(), dtype);
  precision_ = precision;
}

void Generator::enter_precision_autocast(std::optional<AutocastGuard>& autocast,
                                         c10::DeviceType device) const {
  // fp32 and int8 leave a caller's own autocast scope alone.
  if (precision_ == InferencePrecision::bf16) autocast.emplace(device, at::kBFloat16);
}

TrainingBatch Generator::encode_batch(const at::Tensor& images, const at::Tensor& labels) {
  check_fp32_for_training(precision_, "encode_batch");
  at::NoGradGuard no_grad;
  TrainingBatch batch;
  batch.tokens = tokenizer_->encode(images);
  batch.labels = labels;
  return batch;
}

ScheduleLoss Generator::loss(const TrainingBatch& batch, at::Generator& generator) {
  check_fp32_for_training(precision_, "loss");
  return schedule_->loss(models(), batch, generator);
}

Tokens Generator::sample_tokens(const at::Tensor& labels, const SampleRequest& request,
                                int64_t count) {
  const int64_t batch = labels.defined() ? labels.size(0) : count;
  TESSERA_CHECK(batch >= 1, "Generator::sample: {} samples requested (labels {}, count {})", batch,
                labels.defined() ? fmt::format("{}", labels.sizes()) : "undefined", count);
  if (labels.defined()) {
    TESSERA_CHECK(labels.dim() == 1 && labels.scalar_type() == at::kLong,
                  "Generator::sample: labels must be int64 [B], got {} {}", labels.scalar_type(),
                  labels.sizes());
    TESSERA_CHECK(num_classes() > 0,
                  "Generator::sample: the backbone is unconditional but labels were given");
    const int64_t low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
    TESSERA_CHECK(low >= 0 && high < num_classes(),
                  "Generator::sample: labels must be in [0, {}), got values in [{}, {}]",
                  num_classes(), low, high);
  }
  // Schedule::sample validates the options, once for the request.
  const GenerationOptions& options = request.options ? *request.options : config_.sampling;
  set_training(false);
  at::NoGradGuard no_grad;
  TESSERA_CHECK(!request.reference_seeding || request.first_index == 0,
                "Generator::sample: reference seeding draws one stream for the whole batch, so "
                "first_index must be 0, got {} (sample the request as one batch)",
                request.first_index);
  std::optional<AutocastGuard> autocast;
  enter_precision_autocast(autocast, backbone_.device().type());
  SampleRngs rngs =
      request.reference_seeding
          ? SampleRngs::shared_stream(request.seed, batch, request.reference_multinomial)
          : SampleRngs(request.seed, request.first_index, batch);
  return schedule_->sample(models(), labels, grids_, options, rngs);
}

at::Tensor Generator::sample(const at::Tensor& labels, const SampleRequest& request,
                             int64_t count) {
  return decode(sample_tokens(labels, request, count));
}

at::Tensor Generator::decode(const Tokens& tokens) {
  at::NoGradGuard no_grad;
  std::optional<AutocastGuard> autocast;
  enter_precision_autocast(autocast, tokenizer_->device().type());
  // Images are float32 whatever the precision (bf16 convolutions return bf16).
  return decode_thread_invariant(*tokenizer_, tokens).to(at::kFloat);
}

void Generator::set_training(bool training) {
  backbone_.set_training(training);
  if (decoder_) decoder_->set_training(training);
  if (refinement_head_) refinement_head_->set_training(training);
  head_->set_training(training);
  tokenizer_->set_training(false);  // frozen: a generator never trains its tokenizer
}

}  // namespace tessera
