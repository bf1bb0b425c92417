#include "tessera/tokenizer/vq_vae.h"

#include <ATen/core/grad_mode.h>

#include "tokenizer/nn_modules.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"

namespace tessera::tokenizer_detail {

class VqVaeModule : public torch::nn::Module {
 public:
  VqVaeModule(const VqVaeConfig& config, uint64_t seed) {
    const int64_t latent = config.autoencoder.latent_channels;
    const int64_t code_dim = config.quantizer.code_dim;
    encoder = register_module("encoder", std::make_shared<ConvEncoder>(config.autoencoder, latent));
    decoder = register_module("decoder", std::make_shared<ConvDecoder>(config.autoencoder, latent));
    quantize = register_module("quantize",
                               std::make_shared<VectorQuantizerModule>(config.quantizer, seed));
    quant_conv =
        register_module("quant_conv", make_conv(latent, code_dim, config.quant_conv_kernel_size));
    post_quant_conv = register_module("post_quant_conv",
                                      make_conv(code_dim, latent, config.quant_conv_kernel_size));
    initialize_conv_parameters(*this, derive_seed(seed, kConvInitStream));
    train(false);
  }

  std::shared_ptr<ConvEncoder> encoder;
  std::shared_ptr<ConvDecoder> decoder;
  std::shared_ptr<VectorQuantizerModule> quantize;
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};

}  // namespace tessera::tokenizer_detail

namespace tessera {

VqVae::VqVae(const VqVaeConfig& config, uint64_t seed) : config_(config) {
  config_.autoencoder.validate();
  config_.quantizer.validate();
  config_.validate();
  module_ = std::make_shared<tokenizer_detail::VqVaeModule>(config_, seed);
}

VqVae::~VqVae() = default;
VqVae::VqVae(VqVae&&) noexcept = default;
VqVae& VqVae::operator=(VqVae&&) noexcept = default;

TokenizerConfig VqVae::config() const {
  TokenizerConfig config;
  config.kind = TokenizerKind::vq_vae;
  config.vq_vae = config_;
  return config;
}

int64_t VqVae::image_channels() const { return config_.autoencoder.image_channels; }
int64_t VqVae::downsampling_factor() const { return config_.autoencoder.downsampling_factor(); }
int64_t VqVae::vocab_size() const { return config_.quantizer.codebook_size; }
int64_t VqVae::token_channels() const { return config_.quantizer.code_dim; }

std::vector<TokenGridSize> VqVae::token_grids(int64_t image_height, int64_t image_width) const {
  const int64_t factor = downsampling_factor();
  TESSERA_CHECK(image_height > 0 && image_width > 0 && image_height % factor == 0 &&
                    image_width % factor == 0,
                "VQ-VAE: image size {}x{} is not divisible by the downsampling factor {}",
                image_height, image_width, factor);
  return {{image_height / factor, image_width / factor}};
}

at::Tensor VqVae::encode_latent(const at::Tensor& images) {
  tokenizer_detail::check_images(images, image_channels(), downsampling_factor(), "VQ-VAE");
  const at::Tensor input = images.to(device(), at::kFloat);
  return module_->quant_conv->forward(module_->encoder->forward(input));
}

Tokens VqVae::encode(const at::Tensor& images) {
  at::NoGradGuard no_grad;
  Tokens tokens;
  tokens.scales = {module_->quantize->quantize_ids(encode_latent(images))};
  tokens.grids = token_grids(images.size(2), images.size(3));
  return tokens;
}

at::Tensor VqVae::decode_latent(const at::Tensor& codes) {
  TESSERA_CHECK(codes.dim() == 4 && codes.size(1) == config_.quantizer.code_dim,
                "VQ-VAE: decode_latent expects codes [B, {}, h, w], got shape {}",
                config_.quantizer.code_dim, codes.sizes());
  at::NoGradGuard no_grad;
  return module_->decoder->forward(module_->post_quant_conv->forward(codes.to(device())));
}

at::Tensor VqVae::decode(const Tokens& tokens) {
  tokens.validate();
  TESSERA_CHECK(tokens.discrete(), "VQ-VAE: decode needs codebook ids, got vectors");
  TESSERA_CHECK(tokens.num_scales() == 1, "VQ-VAE: expected one scale of ids, got {}",
                tokens.num_scales());
  const TokenGridSize grid = tokens.grids[0];
  at::NoGradGuard no_grad;
  const at::Tensor ids =
      tokens.scales[0].to(device()).view({tokens.batch_size(), grid.height, grid.width});
  return decode_latent(module_->quantize->lookup(ids)).clamp(-1, 1);
}

TokenizerTrainingOutput VqVae::training_forward(const at::Tensor& images) {
  const at::Tensor z = encode_latent(images);
  auto quantized = module_->quantize->forward(z);
  TokenizerTrainingOutput out;
  out.reconstruction =
      module_->decoder->forward(module_->post_quant_conv->forward(quantized.quantized));
  out.regularization = quantized.loss;
  out.terms.emplace_back("commitment", quantized.commitment_loss);
  if (config_.quantizer.codebook_update == CodebookUpdate::gradient) {
    out.terms.emplace_back("codebook", quantized.codebook_loss);
  }
  if (config_.quantizer.dead_code_restart.interval > 0) {
    out.counters.emplace_back("restarted", quantized.restarted_codes);
  }
  out.ids = {quantized.ids};
  return out;
}

std::vector<at::Tensor> VqVae::parameters() const {
  std::vector<at::Tensor> trainable;
  for (const auto& p : tokenizer_detail::module_parameters(*module_)) {
    if (p.requires_grad()) trainable.push_back(p);  // an EMA codebook is not trained by gradient
  }
  return trainable;
}

std::map<std::string, at::Tensor> VqVae::state_dict() const {
  return tokenizer_detail::module_state_dict(*module_);
}

void VqVae::load_state_dict(const std::map<std::string, at::Tensor>& tensors) {
  tokenizer_detail::load_module_state_dict(*module_, tensors, "VQ-VAE");
}

void VqVae::set_training(bool training) { module_->train(training); }
bool VqVae::is_training() const { return module_->is_training(); }
void VqVae::to(at::Device device) { module_->to(device); }
at::Device VqVae::device() const { return tokenizer_detail::module_device(*module_); }

at::Tensor VqVae::codebook() const { return module_->quantize->effective_codebook().detach(); }
at::Tensor VqVae::code_hits_ema() const { return module_->quantize->code_hits_ema; }

}  // namespace tessera
