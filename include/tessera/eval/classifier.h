#pragma once
// The evaluation classifier: a small CNN on the tokenizers' images (float [N, C, 32, 32] in
// [−1, 1], Fashion-MNIST padded with −1; see prepare_fashion_mnist_images), whose penultimate
// features define FID-FM (see evaluation.h).
//
// Architecture: `widths.size()` blocks of conv3x3 (no bias) → batch norm → ReLU → 2x2 max-pool,
// then flatten → linear(feature_dim) → batch norm → ReLU (the features) → dropout → linear(classes).
// The default (32, 64, 128 channels, 128 features) has about 0.36 M parameters (1.4 MB in float32)
// and needs about 20 MFLOP per image forward, so it trains on two CPU cores in minutes.
//
// Parameters are plain tensors under torch-style names ("block0.conv.weight", "block0.bn.
// running_mean", "fc.weight", "out.bias", ...), initialised from `seed` alone.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tessera/core/config.h"

namespace tessera {

struct ClassifierConfig {
  int64_t image_size = 32;  ///< side of the square input images
  int64_t channels = 1;  ///< input channels
  int64_t classes = 10;  ///< output classes
  std::vector<int64_t> widths = {32, 64, 128};  ///< channels of the convolution stages
  int64_t feature_dim = 128;  ///< width of the feature layer FID-FM uses
  double dropout = 0.3;  ///< dropout before the last layer, in training

  template <class Visitor>
  void visit(Visitor& v) {
    v("image_size", image_size);
    v("channels", channels);
    v("classes", classes);
    v("widths", widths);
    v("feature_dim", feature_dim);
    v("dropout", dropout);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< The Fashion-MNIST classifier's architecture (a small CNN).

struct ClassifierOutput {
  at::Tensor logits{};    ///< [N, classes]
  at::Tensor features{};  ///< [N, feature_dim], the penultimate activations
};  ///< What Classifier::forward returns.

class Classifier {
 public:
  explicit Classifier(ClassifierConfig config = {}, uint64_t seed = 0);  ///< Seeded initialisation.

  /// Differentiable. In training mode batch norm uses batch statistics (and updates its running
  /// ones) and dropout draws from `dropout_generator` (required then); in evaluation mode both are
  /// deterministic. Throws tessera::Error for images of the wrong shape.
  ClassifierOutput forward(const at::Tensor& images, at::Generator* dropout_generator = nullptr);

  /// Evaluation mode, no autograd, batch by batch: features [N, feature_dim] and predicted labels.
  at::Tensor features(const at::Tensor& images, int64_t batch_size = 500);
  at::Tensor predict(const at::Tensor& images, int64_t batch_size = 500);  ///< Predicted labels.

  const ClassifierConfig& config() const { return config_; }  ///< Its configuration.
  std::map<std::string, at::Tensor> parameters() const { return parameters_; }  ///< By name.
  std::map<std::string, at::Tensor> buffers() const { return buffers_; }  ///< Batch-norm buffers.
  /// Parameters and buffers together.
  std::map<std::string, at::Tensor> state_dict() const;
  /// Strict: every key, with its shape; throws tessera::Error naming what did not fit.
  void load_state_dict(const std::map<std::string, at::Tensor>& tensors);

  void set_training(bool training) { training_ = training; }  ///< Training mode on or off.
  bool is_training() const { return training_; }  ///< Whether in training mode.

 private:
  ClassifierConfig config_;
  std::map<std::string, at::Tensor> parameters_, buffers_;
  bool training_ = false;
};  ///< The image classifier that FID-FM and the accuracy measurements use.
/// Where save_classifier puts the config in the metadata.
inline constexpr const char* kClassifierConfigMetadataKey = "tessera.classifier.config";

/// One safetensors file: the state dict, and the config as JSON in the metadata (plus `extra`).
void save_classifier(const std::filesystem::path& path, const Classifier& classifier,
                     const std::map<std::string, std::string>& extra_metadata = {});
Classifier load_classifier(const std::filesystem::path& path);  ///< Reads save_classifier's file.

/// The shipped Fashion-MNIST classifier: $TESSERA_CLASSIFIER when set, else
/// models/classifier_fashion_mnist.safetensors under the current directory (the repository root).
std::filesystem::path default_classifier_path();

}  // namespace tessera
