#include "tessera/tokenizer/patch_tokenizer.h"

#include <ATen/ATen.h>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

PatchTokenizer::PatchTokenizer(const PatchTokenizerConfig& config) : config_(config) {
  config_.validate();
}

TokenizerConfig PatchTokenizer::config() const {
  TokenizerConfig config;
  config.kind = TokenizerKind::patch;
  config.patch = config_;
  return config;
}

std::vector<TokenGridSize> PatchTokenizer::token_grids(int64_t image_height,
                                                       int64_t image_width) const {
  const int64_t p = config_.patch_size;
  TESSERA_CHECK(
      image_height > 0 && image_width > 0 && image_height % p == 0 && image_width % p == 0,
      "patch tokenizer: image size {}x{} is not divisible by the patch size {}", image_height,
      image_width, p);
  return {{image_height / p, image_width / p}};
}

Tokens PatchTokenizer::encode(const at::Tensor& images) {
  TESSERA_CHECK(images.defined() && images.dim() == 4,
                "patch tokenizer: expected images [B, C, H, W], got shape {}",
                images.defined() ? images.sizes() : at::IntArrayRef{});
  TESSERA_CHECK(at::isFloatingType(images.scalar_type()),
                "patch tokenizer: expected floating-point images, got {}", images.scalar_type());
  TESSERA_CHECK(images.size(1) == config_.image_channels,
                "patch tokenizer: expected {} image channels, got {}", config_.image_channels,
                images.size(1));
  const auto grids = token_grids(images.size(2), images.size(3));
  const int64_t b = images.size(0), c = images.size(1), p = config_.patch_size;
  const int64_t h = grids[0].height, w = grids[0].width;
  Tokens tokens;
  tokens.scales = {images.to(device_, at::kFloat)
                       .reshape({b, c, h, p, w, p})
                       .permute({0, 2, 4, 1, 3, 5})
                       .reshape({b, h * w, c * p * p})};
  tokens.grids = grids;
  return tokens;
}

at::Tensor PatchTokenizer::decode(const Tokens& tokens) {
  tokens.validate();
  TESSERA_CHECK(!tokens.discrete(), "patch tokenizer: decode needs token vectors, got ids");
  TESSERA_CHECK(tokens.num_scales() == 1, "patch tokenizer: expected one scale, got {}",
                tokens.num_scales());
  const at::Tensor& vectors = tokens.scales[0];
  TESSERA_CHECK(vectors.size(2) == token_channels(),
                "patch tokenizer: tokens must have C·p·p = {} values, got shape {}",
                token_channels(), vectors.sizes());
  const int64_t b = vectors.size(0), c = config_.image_channels, p = config_.patch_size;
  const int64_t h = tokens.grids[0].height, w = tokens.grids[0].width;
  return vectors.reshape({b, h, w, c, p, p})
      .permute({0, 3, 1, 4, 2, 5})
      .reshape({b, c, h * p, w * p})
      .clamp(-1, 1);
}

TokenizerTrainingOutput PatchTokenizer::training_forward(const at::Tensor& images) {
  (void)encode(images);  // the same checks as encoding
  TokenizerTrainingOutput out;
  out.reconstruction = images.to(device_, at::kFloat);
  out.regularization = at::zeros({}, out.reconstruction.options());
  return out;
}

void PatchTokenizer::load_state_dict(const std::map<std::string, at::Tensor>& tensors) {
  TESSERA_CHECK(tensors.empty(),
                "patch tokenizer: has no parameters, got a state dict of {} "
                "tensors (first '{}')",
                tensors.size(), tensors.begin()->first);
}

}  // namespace tessera
