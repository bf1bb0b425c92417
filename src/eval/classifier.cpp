#include "tessera/eval/classifier.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdlib>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/io/safetensors.h"

namespace tessera {

namespace {

constexpr double kBatchNormMomentum = 0.1;  // torch's default
constexpr double kBatchNormEps = 1e-5;

std::string block_name(size_t i) { return "block" + std::to_string(i); }

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

void ClassifierConfig::validate() const {
  TESSERA_CHECK(channels > 0, "classifier.channels must be positive, got {}", channels);
  TESSERA_CHECK(classes >= 2, "classifier.classes must be at least 2, got {}", classes);
  TESSERA_CHECK(!widths.empty(), "classifier.widths must name at least one block");
  for (int64_t w : widths) {
    TESSERA_CHECK(w > 0, "classifier.widths must be positive, got {}", w);
  }
  TESSERA_CHECK(image_size > 0 && image_size % (int64_t{1} << widths.size()) == 0,
                "classifier.image_size {} must be divisible by 2^{} (one 2x2 pooling per block)",
                image_size, widths.size());
  TESSERA_CHECK(feature_dim > 0, "classifier.feature_dim must be positive, got {}", feature_dim);
  TESSERA_CHECK(dropout >= 0 && dropout < 1, "classifier.dropout must be in [0, 1), got {}",
                dropout);
}

Classifier::Classifier(ClassifierConfig config, uint64_t seed) : config_(std::move(config)) {
  config_.validate();
  at::NoGradGuard no_grad;
  at::Generator generator = make_cpu_generator(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  // U(±1/√fan_in) for weights and biases: nn.Conv2d's and nn.Linear's default initialisation,
  // drawn from the seeded generator so the initial weights depend on `seed` alone.
  auto uniform = [&](std::vector<int64_t> shape, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    return (at::rand(shape, generator, f32) * (2 * bound) - bound).requires_grad_(true);
  };
  auto add_batch_norm = [&](const std::string& name, int64_t n) {
    parameters_[name + ".weight"] = at::ones({n}, f32).requires_grad_(true);
    parameters_[name + ".bias"] = at::zeros({n}, f32).requires_grad_(true);
    buffers_[name + ".running_mean"] = at::zeros({n}, f32);
    buffers_[name + ".running_var"] = at::ones({n}, f32);
  };
  int64_t in = config_.channels;
  for (size_t i = 0; i < config_.widths.size(); ++i) {
    const int64_t out = config_.widths[i];
    parameters_[block_name(i) + ".conv.weight"] = uniform({out, in, 3, 3}, in * 9);
    add_batch_norm(block_name(i) + ".bn", out);
    in = out;
  }
  const int64_t side = config_.image_size >> config_.widths.size();
  const int64_t flat = in * side * side;
  parameters_["fc.weight"] = uniform({config_.feature_dim, flat}, flat);
  add_batch_norm("fc_bn", config_.feature_dim);
  parameters_["out.weight"] = uniform({config_.classes, config_.feature_dim}, config_.feature_dim);
  parameters_["out.bias"] = uniform({config_.classes}, config_.feature_dim);
}

ClassifierOutput Classifier::forward(const at::Tensor& images, at::Generator* dropout_generator) {
  TESSERA_CHECK(images.defined() && images.dim() == 4 && images.size(1) == config_.channels &&
                    images.size(2) == config_.image_size && images.size(3) == config_.image_size,
                "Classifier: expected images [N, {}, {}, {}], got {}", config_.channels,
                config_.image_size, config_.image_size,
                images.defined() ? fmt::format("{}", images.sizes()) : std::string("undefined"));
  TESSERA_CHECK(images.is_floating_point(), "Classifier: expected float images in [-1, 1], got {}",
                images.scalar_type());
  const auto& p = parameters_;
  auto batch_norm = [&](const at::Tensor& x, const std::string& name) {
    return at::batch_norm(x, p.at(name + ".weight"), p.at(name + ".bias"),
                          buffers_.at(name + ".running_mean"), buffers_.at(name + ".running_var"),
                          training_, kBatchNormMomentum, kBatchNormEps, /*cudnn_enabled=*/true);
  };
  at::Tensor x = images.to(at::kFloat);
  for (size_t i = 0; i < config_.widths.size(); ++i) {
    x = at::conv2d(x, p.at(block_name(i) + ".conv.weight"), {}, 1, 1);
    x = at::max_pool2d(at::relu(batch_norm(x, block_name(i) + ".bn")), {2, 2});
  }
  x = at::linear(x.flatten(1), p.at("fc.weight"));
  const at::Tensor features = at::relu(batch_norm(x, "fc_bn"));
  at::Tensor h = features;
  if (training_ && config_.dropout > 0) {
    TESSERA_CHECK(dropout_generator != nullptr,
                  "Classifier: training mode with dropout needs a generator");
    // Inverted dropout from the caller's generator (at::dropout would draw from the global one).
    const at::Tensor keep =
        at::empty(h.sizes(), h.options().requires_grad(false))
            .bernoulli_(1.0 - config_.dropout, *dropout_generator);
    h = h * keep / (1.0 - config_.dropout);
  }
  return {at::linear(h, p.at("out.weight"), p.at("out.bias")), features};
}

at::Tensor Classifier::features(const at::Tensor& images, int64_t batch_size) {
  TESSERA_CHECK(batch_size > 0, "Classifier::features: batch_size must be positive, got {}",
                batch_size);
  TESSERA_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0,
                "Classifier::features: expected images [N, C, H, W] with N > 0");
  const bool was_training = training_;
  training_ = false;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t begin = 0; begin < images.size(0); begin += batch_size) {
    parts.push_back(
        forward(images.slice(0, begin, std::min(images.size(0), begin + batch_size))).features);
  }
  training_ = was_training;
  return at::cat(parts);
}

at::Tensor Classifier::predict(const at::Tensor& images, int64_t batch_size) {
  TESSERA_CHECK(batch_size > 0, "Classifier::predict: batch_size must be positive, got {}",
                batch_size);
  TESSERA_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0,
                "Classifier::predict: expected images [N, C, H, W] with N > 0");
  const bool was_training = training_;
  training_ = false;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t begin = 0; begin < images.size(0); begin += batch_size) {
    parts.push_back(forward(images.slice(0, begin, std::min(images.size(0), begin + batch_size)))
                        .logits.argmax(1));
  }
  training_ = was_training;
  return at::cat(parts);
}

std::map<std::string, at::Tensor> Classifier::state_dict() const {
  std::map<std::string, at::Tensor> out = parameters_;
  for (const auto& [name, b] : buffers_) out[name] = b;
  return out;
}

void Classifier::load_state_dict(const std::map<std::string, at::Tensor>& tensors) {
  const auto own = state_dict();
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, t] : own) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != t.sizes()) {
      mismatched.push_back(fmt::format("{} (model {}, file {})", name, t.sizes(),
                                       it->second.sizes()));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!own.contains(name)) unexpected.push_back(name);
  }
  TESSERA_CHECK(missing.empty() && unexpected.empty() && mismatched.empty(),
                "Classifier::load_state_dict: missing [{}], unexpected [{}], shape mismatch [{}]",
                join(missing), join(unexpected), join(mismatched));
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : own) t.copy_(tensors.at(name));
}

void save_classifier(const std::filesystem::path& path, const Classifier& classifier,
                     const std::map<std::string, std::string>& extra_metadata) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : classifier.state_dict()) tensors[name] = t.detach();
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata[kClassifierConfigMetadataKey] = config_to_json(classifier.config()).dump();
  save_safetensors(path, tensors, metadata);
}

Classifier load_classifier(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  auto it = file.metadata().find(kClassifierConfigMetadataKey);
  TESSERA_CHECK(it != file.metadata().end(),
                "load_classifier: {} has no '{}' metadata (not a Tessera classifier?)",
                path.string(), kClassifierConfigMetadataKey);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    TESSERA_FAIL("load_classifier: {}: malformed config metadata: {}", path.string(), e.what());
  }
  Classifier classifier(config_from_json<ClassifierConfig>(j, "classifier"));
  classifier.load_state_dict(file.all());
  return classifier;
}

std::filesystem::path default_classifier_path() {
  if (const char* env = std::getenv("TESSERA_CLASSIFIER"); env != nullptr && *env != '\0') {
    return env;
  }
  return std::filesystem::path("models") / "classifier_fashion_mnist.safetensors";
}

}  // namespace tessera
