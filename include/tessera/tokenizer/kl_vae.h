#pragma once
// A KL-regularised autoencoder with continuous tokens (LDM's AutoencoderKL as MAR uses it):
//   images -> encoder (2·z_channels) -> 1x1 quant_conv -> (mean, log-variance) per position
//   tokens = mean · latent_scale                      (encode: deterministic)
//   tokens = (mean + std·ε) · latent_scale            (encode_sample, ε ~ N(0, I))
//   images = decoder(1x1 post_quant_conv(tokens / latent_scale)), clamped to [−1, 1]
// The log-variance is clamped to [−30, 20] as in the reference. Training draws z = mean + std·ε,
// reconstructs from it and adds kl_weight · KL(N(mean, var) ‖ N(0, I)), the KL summed over every
// latent element and averaged over the batch (0.5·Σ(mean² + var − 1 − log var)).
// Tokens are float [B, h·w, token_channels]: one vector per latent position, for diffusion and
// flow heads.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

namespace tokenizer_detail {
class KlVaeModule;
}

/// The diagonal Gaussian of a latent: mean and log-variance [B, C, h, w] (log-variance clamped).
struct DiagonalGaussian {
  at::Tensor mean{};  ///< [B, C, h, w]
  at::Tensor log_variance{};  ///< [B, C, h, w], clamped to [−30, 20]

  /// Splits moments [B, 2C, h, w] into mean and log-variance along channels; clamps the latter to
  /// [−30, 20].
  static DiagonalGaussian from_moments(const at::Tensor& moments);
  at::Tensor std() const;  ///< exp(log_variance / 2).
  /// mean + std·ε with ε drawn from `generator` (the default CPU generator when undefined).
  at::Tensor sample(at::Generator generator = {}) const;
  /// KL(N(mean, var) ‖ N(0, I)) per batch element: 0.5·Σ(mean² + var − 1 − log var), [B].
  at::Tensor kl_to_standard_normal() const;
};

class KlVae final : public Tokenizer {
 public:
  explicit KlVae(const KlVaeConfig& config, uint64_t seed = 0);  ///< Seeded initialisation.
  ~KlVae() override;
  KlVae(KlVae&&) noexcept;  ///< Moves; the source is not usable afterwards.
  KlVae& operator=(KlVae&&) noexcept;  ///< Moves; the source is not usable afterwards.

  TokenizerConfig config() const override;
  int64_t image_channels() const override;
  int64_t downsampling_factor() const override;
  std::vector<TokenGridSize> token_grids(int64_t image_height, int64_t image_width) const override;
  int64_t vocab_size() const override { return 0; }
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

  const KlVaeConfig& kl_vae_config() const { return config_; }  ///< Its configuration.
  /// The posterior q(z | images), without autograd.
  DiagonalGaussian encode_posterior(const at::Tensor& images);
  /// Tokens from a posterior sample (MAR's training-time tokens), ε from `generator`.
  Tokens encode_sample(const at::Tensor& images, at::Generator generator);
  /// decoder(post_quant_conv(latent)) for latents [B, token_channels, h, w] (tokens / latent_scale,
  /// unpatchified), not clamped (decode() clamps to the image range): MAR's vae.decode, for
  /// comparing with a reference.
  at::Tensor decode_latent(const at::Tensor& latent);

 private:
  DiagonalGaussian posterior(const at::Tensor& images);
  Tokens tokens_from_latent(const at::Tensor& latent) const;
  KlVaeConfig config_;
  std::shared_ptr<tokenizer_detail::KlVaeModule> module_;
};  ///< A KL-regularised autoencoder (MAR's KL-16): continuous tokens, latents times latent_scale.

}  // namespace tessera
