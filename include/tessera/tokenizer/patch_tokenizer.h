#pragma once
// The identity tokenizer for pixel-space experiments: each p x p patch of the image becomes one
// token vector of C·p·p values, ordered channel, row, column within the patch (MAR's patchify:
// [B, C, h·p, w·p] -> [B, h·w, C·p·p]). decode() is the exact inverse, clamped to [−1, 1]. No
// parameters; training is a no-op.

#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

class PatchTokenizer final : public Tokenizer {
 public:
  explicit PatchTokenizer(const PatchTokenizerConfig& config);  ///< A tokenizer with these sizes.

  TokenizerConfig config() const override;
  int64_t image_channels() const override { return config_.image_channels; }
  int64_t downsampling_factor() const override { return config_.patch_size; }
  std::vector<TokenGridSize> token_grids(int64_t image_height, int64_t image_width) const override;
  int64_t vocab_size() const override { return 0; }
  int64_t token_channels() const override {
    return config_.image_channels * config_.patch_size * config_.patch_size;
  }
  Tokens encode(const at::Tensor& images) override;
  at::Tensor decode(const Tokens& tokens) override;
  /// The images themselves (nothing to learn), with a zero regularisation.
  TokenizerTrainingOutput training_forward(const at::Tensor& images) override;
  std::vector<at::Tensor> parameters() const override { return {}; }
  std::map<std::string, at::Tensor> state_dict() const override { return {}; }
  void load_state_dict(const std::map<std::string, at::Tensor>& tensors) override;
  void set_training(bool training) override { training_ = training; }
  bool is_training() const override { return training_; }
  void to(at::Device device) override { device_ = device; }
  at::Device device() const override { return device_; }

 private:
  PatchTokenizerConfig config_;
  bool training_ = false;
  at::Device device_ = at::kCPU;
};  ///< Pixel patches as continuous tokens, without parameters.

}  // namespace tessera
