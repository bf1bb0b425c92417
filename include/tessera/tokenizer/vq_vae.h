#pragma once
// A single-scale VQ-VAE (van den Oord et al. 2017; LlamaGen's VQModel layout):
//   images -> encoder -> quant_conv -> vector quantiser -> post_quant_conv -> decoder -> images
// Tokens are one h x w grid of codebook ids, h = H / downsampling, w = W / downsampling. The
// quantiser is described in vector_quantizer.h (see Note [Straight-through quantisation]).
// Parameter names follow the same reference layout as the multi-scale model (encoder.*, decoder.*,
// quant_conv.*, post_quant_conv.*, quantize.embedding.weight).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

namespace tokenizer_detail {
class VqVaeModule;
}

class VqVae final : public Tokenizer {
 public:
  explicit VqVae(const VqVaeConfig& config, uint64_t seed = 0);  ///< Seeded initialisation.
  ~VqVae() override;
  VqVae(VqVae&&) noexcept;  ///< Moves; the source is not usable afterwards.
  VqVae& operator=(VqVae&&) noexcept;  ///< Moves; the source is not usable afterwards.

  TokenizerConfig config() const override;
  int64_t image_channels() const override;
  int64_t downsampling_factor() const override;
  std::vector<TokenGridSize> token_grids(int64_t image_height, int64_t image_width) const override;
  int64_t vocab_size() const override;
  int64_t token_channels() const override;
  Tokens encode(const at::Tensor& images) override;
  at::Tensor decode(const Tokens& tokens) override;
  TokenizerTrainingOutput training_forward(const at::Tensor& images) override;
  std::vector<at::Tensor> parameters() const override;
  std::map<std::string, at::Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, at::Tensor>& tensors) override;
  void set_training(bool training) override;
  bool is_training() const override;
  void to(at::Device device) override;
  at::Device device() const override;

  const VqVaeConfig& vq_vae_config() const { return config_; }  ///< Its configuration.
  /// quant_conv(encoder(images)): the latents before quantisation, [B, code_dim, h, w].
  at::Tensor encode_latent(const at::Tensor& images);
  /// decoder(post_quant_conv(codes)) for code vectors [B, code_dim, h, w], not clamped (decode()
  /// clamps to the image range): LlamaGen's VQModel.decode, for comparing with a reference.
  at::Tensor decode_latent(const at::Tensor& codes);
  at::Tensor codebook() const;  ///< [V, code_dim], unit rows when L2-normalised
  at::Tensor code_hits_ema() const;  ///< The quantiser's hit counts (VectorQuantizer).

 private:
  VqVaeConfig config_;
  std::shared_ptr<tokenizer_detail::VqVaeModule> module_;
};  ///< A single-scale VQ-VAE (taming-transformers' design, LlamaGen's quantiser options).

}  // namespace tessera
