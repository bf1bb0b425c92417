#include "tessera/tokenizer/kl_vae.h"

#include <ATen/core/grad_mode.h>

#include "tokenizer/nn_modules.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"

namespace tessera::tokenizer_detail {

class KlVaeModule : public torch::nn::Module {
 public:
  KlVaeModule(const KlVaeConfig& config, uint64_t seed) : generator(make_cpu_generator(seed)) {
    const int64_t z_channels = config.autoencoder.latent_channels;
    encoder = register_module("encoder",
                              std::make_shared<ConvEncoder>(config.autoencoder, 2 * z_channels));
    decoder =
        register_module("decoder", std::make_shared<ConvDecoder>(config.autoencoder, z_channels));
    quant_conv =
        register_module("quant_conv", make_conv(2 * z_channels, 2 * config.token_channels, 1));
    post_quant_conv =
        register_module("post_quant_conv", make_conv(config.token_channels, z_channels, 1));
    initialize_conv_parameters(*this, derive_seed(seed, kConvInitStream));
    train(false);
  }

  std::shared_ptr<ConvEncoder> encoder;
  std::shared_ptr<ConvDecoder> decoder;
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
  at::Generator generator;  // the training-time posterior samples
};

}  // namespace tessera::tokenizer_detail

namespace tessera {

DiagonalGaussian DiagonalGaussian::from_moments(const at::Tensor& moments) {
  TESSERA_CHECK(moments.dim() == 4 && moments.size(1) % 2 == 0,
                "DiagonalGaussian: expected moments [B, 2C, h, w], got shape {}", moments.sizes());
  const auto halves = moments.chunk(2, 1);
  return {halves[0], halves[1].clamp(-30.0, 20.0)};
}

at::Tensor DiagonalGaussian::std() const { return (log_variance * 0.5).exp(); }

at::Tensor DiagonalGaussian::sample(at::Generator generator) const {
  at::Tensor noise;
  if (generator.defined()) {
    // Drawn on the CPU from the given generator, so a seed gives the same draw on every device.
    noise = at::randn(mean.sizes(), generator, at::TensorOptions().dtype(mean.scalar_type()))
                .to(mean.device());
  } else {
    noise = at::randn_like(mean);
  }
  return mean + std() * noise;
}

at::Tensor DiagonalGaussian::kl_to_standard_normal() const {
  return (mean.square() + log_variance.exp() - 1.0 - log_variance).sum({1, 2, 3}) * 0.5;
}

KlVae::KlVae(const KlVaeConfig& config, uint64_t seed) : config_(config) {
  config_.autoencoder.validate();
  config_.validate();
  module_ = std::make_shared<tokenizer_detail::KlVaeModule>(config_, seed);
}

KlVae::~KlVae() = default;
KlVae::KlVae(KlVae&&) noexcept = default;
KlVae& KlVae::operator=(KlVae&&) noexcept = default;

TokenizerConfig KlVae::config() const {
  TokenizerConfig config;
  config.kind = TokenizerKind::kl_vae;
  config.kl_vae = config_;
  return config;
}

int64_t KlVae::image_channels() const { return config_.autoencoder.image_channels; }
int64_t KlVae::downsampling_factor() const { return config_.autoencoder.downsampling_factor(); }
int64_t KlVae::token_channels() const { return config_.token_channels; }

std::vector<TokenGridSize> KlVae::token_grids(int64_t image_height, int64_t image_width) const {
  const int64_t factor = downsampling_factor();
  TESSERA_CHECK(image_height > 0 && image_width > 0 && image_height % factor == 0 &&
                    image_width % factor == 0,
                "KL-VAE: image size {}x{} is not divisible by the downsampling factor {}",
                image_height, image_width, factor);
  return {{image_height / factor, image_width / factor}};
}

DiagonalGaussian KlVae::posterior(const at::Tensor& images) {
  tokenizer_detail::check_images(images, image_channels(), downsampling_factor(), "KL-VAE");
  const at::Tensor input = images.to(device(), at::kFloat);
  return DiagonalGaussian::from_moments(
      module_->quant_conv->forward(module_->encoder->forward(input)));
}

DiagonalGaussian KlVae::encode_posterior(const at::Tensor& images) {
  at::NoGradGuard no_grad;
  return posterior(images);
}

Tokens KlVae::tokens_from_latent(const at::Tensor& latent) const {
  const int64_t batch = latent.size(0), height = latent.size(2), width = latent.size(3);
  Tokens tokens;
  tokens.scales = {(latent * config_.latent_scale)
                       .permute({0, 2, 3, 1})
                       .reshape({batch, height * width, config_.token_channels})};
  tokens.grids = {{height, width}};
  return tokens;
}

Tokens KlVae::encode(const at::Tensor& images) {
  at::NoGradGuard no_grad;
  return tokens_from_latent(posterior(images).mean);
}

Tokens KlVae::encode_sample(const at::Tensor& images, at::Generator generator) {
  at::NoGradGuard no_grad;
  return tokens_from_latent(posterior(images).sample(std::move(generator)));
}

at::Tensor KlVae::decode_latent(const at::Tensor& latent) {
  TESSERA_CHECK(latent.dim() == 4 && latent.size(1) == config_.token_channels,
                "KL-VAE: decode_latent expects latents [B, {}, h, w], got shape {}",
                config_.token_channels, latent.sizes());
  at::NoGradGuard no_grad;
  return module_->decoder->forward(
      module_->post_quant_conv->forward(latent.to(device(), at::kFloat)));
}

at::Tensor KlVae::decode(const Tokens& tokens) {
  tokens.validate();
  TESSERA_CHECK(!tokens.discrete(), "KL-VAE: decode needs token vectors, got ids");
  TESSERA_CHECK(tokens.num_scales() == 1, "KL-VAE: expected one scale of tokens, got {}",
                tokens.num_scales());
  const at::Tensor& vectors = tokens.scales[0];
  TESSERA_CHECK(vectors.size(2) == config_.token_channels,
                "KL-VAE: tokens must have {} channels, got shape {}", config_.token_channels,
                vectors.sizes());
  const TokenGridSize grid = tokens.grids[0];
  at::NoGradGuard no_grad;
  const at::Tensor latent =
      (vectors.to(device(), at::kFloat) / config_.latent_scale)
          .view({vectors.size(0), grid.height, grid.width, config_.token_channels})
          .permute({0, 3, 1, 2})
          .contiguous();
  return decode_latent(latent).clamp(-1, 1);
}

TokenizerTrainingOutput KlVae::training_forward(const at::Tensor& images) {
  const DiagonalGaussian q = posterior(images);
  const at::Tensor z = q.sample(module_->generator);
  TokenizerTrainingOutput out;
  out.reconstruction = module_->decoder->forward(module_->post_quant_conv->forward(z));
  const at::Tensor kl = q.kl_to_standard_normal().mean();
  out.regularization = kl * config_.kl_weight;
  out.terms.emplace_back("kl", kl.item<double>());
  return out;
}

std::vector<at::Tensor> KlVae::parameters() const {
  return tokenizer_detail::module_parameters(*module_);
}

std::map<std::string, at::Tensor> KlVae::state_dict() const {
  return tokenizer_detail::module_state_dict(*module_);
}

void KlVae::load_state_dict(const std::map<std::string, at::Tensor>& tensors) {
  tokenizer_detail::load_module_state_dict(*module_, tensors, "KL-VAE");
}

void KlVae::set_training(bool training) { module_->train(training); }
bool KlVae::is_training() const { return module_->is_training(); }
void KlVae::to(at::Device device) { module_->to(device); }
at::Device KlVae::device() const { return tokenizer_detail::module_device(*module_); }

}  // namespace tessera
