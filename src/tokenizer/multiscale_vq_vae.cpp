#include "tessera/tokenizer/multiscale_vq_vae.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <set>

#include "tokenizer/nn_modules.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/tokenizer/codebook_usage.h"

namespace tessera::tokenizer_detail {

// VQVAE: encoder, quant_conv, quantize, post_quant_conv, decoder.
class MultiScaleVqVaeModule : public torch::nn::Module {
 public:
  MultiScaleVqVaeModule(const MultiScaleVqVaeConfig& config, uint64_t seed) {
    const int64_t code_dim = config.autoencoder.latent_channels;
    encoder =
        register_module("encoder", std::make_shared<ConvEncoder>(config.autoencoder, code_dim));
    decoder =
        register_module("decoder", std::make_shared<ConvDecoder>(config.autoencoder, code_dim));
    quantize = register_module(
        "quantize", std::make_shared<MultiScaleQuantizerModule>(code_dim, config.quantizer, seed));
    quant_conv =
        register_module("quant_conv", make_conv(code_dim, code_dim, config.quant_conv_kernel_size));
    post_quant_conv = register_module("post_quant_conv",
                                      make_conv(code_dim, code_dim, config.quant_conv_kernel_size));
    initialize_conv_parameters(*this, derive_seed(seed, kConvInitStream));
    train(false);
  }

  std::shared_ptr<ConvEncoder> encoder;
  std::shared_ptr<ConvDecoder> decoder;
  std::shared_ptr<MultiScaleQuantizerModule> quantize;
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};

}  // namespace tessera::tokenizer_detail

namespace tessera {

MultiScaleVqVae::MultiScaleVqVae(const MultiScaleVqVaeConfig& config, uint64_t seed)
    : config_(config) {
  config_.autoencoder.validate();
  config_.quantizer.validate();
  config_.validate();
  module_ = std::make_shared<tokenizer_detail::MultiScaleVqVaeModule>(config_, seed);
}

MultiScaleVqVae::~MultiScaleVqVae() = default;
MultiScaleVqVae::MultiScaleVqVae(MultiScaleVqVae&&) noexcept = default;
MultiScaleVqVae& MultiScaleVqVae::operator=(MultiScaleVqVae&&) noexcept = default;

TokenizerConfig MultiScaleVqVae::config() const {
  TokenizerConfig config;
  config.kind = TokenizerKind::multiscale_vq_vae;
  config.multiscale_vq_vae = config_;
  return config;
}

int64_t MultiScaleVqVae::image_channels() const { return config_.autoencoder.image_channels; }
int64_t MultiScaleVqVae::downsampling_factor() const {
  return config_.autoencoder.downsampling_factor();
}
int64_t MultiScaleVqVae::vocab_size() const { return config_.quantizer.codebook_size; }
int64_t MultiScaleVqVae::token_channels() const { return config_.autoencoder.latent_channels; }

std::vector<TokenGridSize> MultiScaleVqVae::token_grids(int64_t image_height,
                                                        int64_t image_width) const {
  const int64_t factor = downsampling_factor();
  TESSERA_CHECK(
      image_height > 0 && image_width > 0 && image_height % factor == 0 &&
          image_width % factor == 0,
      "multi-scale VQ-VAE: image size {}x{} is not divisible by the downsampling factor {}",
      image_height, image_width, factor);
  const int64_t latent_h = image_height / factor, latent_w = image_width / factor;
  TESSERA_CHECK(latent_h == patch_nums().back() && latent_w == patch_nums().back(),
                "multi-scale VQ-VAE: patch_nums must end at the latent size: the last scale is "
                "{}x{} but {}x{} images give a {}x{} latent (downsampling {})",
                patch_nums().back(), patch_nums().back(), image_height, image_width, latent_h,
                latent_w, factor);
  std::vector<TokenGridSize> grids;
  for (int64_t pn : patch_nums()) grids.push_back({pn, pn});
  return grids;
}

at::Tensor MultiScaleVqVae::encode_latent(const at::Tensor& images) {
  tokenizer_detail::check_images(images, image_channels(), downsampling_factor(),
                                 "multi-scale VQ-VAE");
  (void)token_grids(images.size(2), images.size(3));  // the latent must match patch_nums
  const at::Tensor input = images.to(device(), at::kFloat);
  return module_->quant_conv->forward(module_->encoder->forward(input));
}

std::vector<at::Tensor> MultiScaleVqVae::latent_to_ids(const at::Tensor& f) {
  return module_->quantize->f_to_ids_or_f_hats(f, /*to_f_hat=*/false);
}

std::vector<at::Tensor> MultiScaleVqVae::latent_to_f_hats(const at::Tensor& f) {
  return module_->quantize->f_to_ids_or_f_hats(f, /*to_f_hat=*/true);
}

void MultiScaleVqVae::check_scale(int64_t scale) const {
  TESSERA_CHECK(scale >= 0 && scale < num_scales(),
                "multi-scale VQ-VAE: scale {} is outside [0, {})", scale, num_scales());
}

at::Tensor MultiScaleVqVae::empty_f_hat(int64_t batch_size) const {
  TESSERA_CHECK(batch_size > 0, "multi-scale VQ-VAE: batch size must be positive, got {}",
                batch_size);
  const int64_t side = patch_nums().back();
  return at::zeros({batch_size, token_channels(), side, side},
                   at::TensorOptions().dtype(at::kFloat).device(device()));
}

at::Tensor MultiScaleVqVae::embed_ids(const at::Tensor& ids, int64_t scale) {
  check_scale(scale);
  return module_->quantize->embed(ids.to(device()), patch_nums()[static_cast<size_t>(scale)]);
}

void MultiScaleVqVae::add_scale_embeddings(at::Tensor& f_hat, int64_t scale, const at::Tensor& h) {
  check_scale(scale);
  const int64_t side = patch_nums()[static_cast<size_t>(scale)];
  const int64_t final_side = patch_nums().back();
  TESSERA_CHECK(f_hat.dim() == 4 && f_hat.size(1) == token_channels() &&
                    f_hat.size(2) == final_side && f_hat.size(3) == final_side,
                "multi-scale VQ-VAE: f_hat must be [B, {}, {}, {}], got shape {}", token_channels(),
                final_side, final_side, f_hat.sizes());
  TESSERA_CHECK(h.dim() == 4 && h.size(0) == f_hat.size(0) && h.size(1) == token_channels() &&
                    h.size(2) == side && h.size(3) == side,
                "multi-scale VQ-VAE: scale {} embeddings must be [{}, {}, {}, {}], got shape {}",
                scale, f_hat.size(0), token_channels(), side, side, h.sizes());
  at::NoGradGuard no_grad;
  module_->quantize->add_scale(f_hat, scale, h);
}

void MultiScaleVqVae::add_scale_ids(at::Tensor& f_hat, int64_t scale, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  add_scale_embeddings(f_hat, scale, embed_ids(ids, scale));
}

at::Tensor MultiScaleVqVae::next_scale_input(const at::Tensor& f_hat, int64_t scale) const {
  check_scale(scale);
  const int64_t side = patch_nums()[static_cast<size_t>(scale)];
  TESSERA_CHECK(f_hat.dim() == 4 && f_hat.size(1) == token_channels(),
                "multi-scale VQ-VAE: f_hat must be [B, {}, P, P], got shape {}", token_channels(),
                f_hat.sizes());
  at::NoGradGuard no_grad;
  return at::adaptive_avg_pool2d(f_hat, {side, side})
      .view({f_hat.size(0), token_channels(), side * side})
      .transpose(1, 2);
}

at::Tensor MultiScaleVqVae::ids_to_f_hat(const std::vector<at::Tensor>& ids) {
  TESSERA_CHECK(static_cast<int64_t>(ids.size()) == num_scales(),
                "multi-scale VQ-VAE: expected ids for {} scales, got {}", num_scales(), ids.size());
  at::NoGradGuard no_grad;
  at::Tensor f_hat = empty_f_hat(ids[0].size(0));
  for (int64_t s = 0; s < num_scales(); ++s) add_scale_ids(f_hat, s, ids[static_cast<size_t>(s)]);
  return f_hat;
}

at::Tensor MultiScaleVqVae::f_hat_to_images(const at::Tensor& f_hat) {
  return module_->decoder->forward(module_->post_quant_conv->forward(f_hat)).clamp(-1, 1);
}

at::Tensor MultiScaleVqVae::teacher_forcing_input(const std::vector<at::Tensor>& ids) {
  TESSERA_CHECK(static_cast<int64_t>(ids.size()) == num_scales(),
                "multi-scale VQ-VAE: expected ids for {} scales, got {}", num_scales(), ids.size());
  at::NoGradGuard no_grad;
  at::Tensor f_hat = empty_f_hat(ids[0].size(0));
  std::vector<at::Tensor> inputs;
  for (int64_t s = 0; s + 1 < num_scales(); ++s) {
    add_scale_ids(f_hat, s, ids[static_cast<size_t>(s)]);
    inputs.push_back(next_scale_input(f_hat, s + 1));
  }
  return at::cat(inputs, 1);
}

Tokens MultiScaleVqVae::encode(const at::Tensor& images) {
  at::NoGradGuard no_grad;
  Tokens tokens;
  tokens.scales = latent_to_ids(encode_latent(images));
  tokens.grids = token_grids(images.size(2), images.size(3));
  return tokens;
}

at::Tensor MultiScaleVqVae::decode(const Tokens& tokens) {
  tokens.validate();
  TESSERA_CHECK(tokens.discrete(), "multi-scale VQ-VAE: decode needs codebook ids, got vectors");
  TESSERA_CHECK(tokens.num_scales() == num_scales(),
                "multi-scale VQ-VAE: expected {} scales (patch_nums), got {}", num_scales(),
                tokens.num_scales());
  for (int64_t s = 0; s < num_scales(); ++s) {
    const int64_t pn = patch_nums()[static_cast<size_t>(s)];
    TESSERA_CHECK(tokens.grids[static_cast<size_t>(s)] == (TokenGridSize{pn, pn}),
                  "multi-scale VQ-VAE: scale {} must be a {}x{} grid, got {}x{}", s, pn, pn,
                  tokens.grids[static_cast<size_t>(s)].height,
                  tokens.grids[static_cast<size_t>(s)].width);
  }
  at::NoGradGuard no_grad;
  return f_hat_to_images(ids_to_f_hat(tokens.scales));
}

TokenizerTrainingOutput MultiScaleVqVae::training_forward(const at::Tensor& images) {
  const at::Tensor f = encode_latent(images);
  auto quantized = module_->quantize->forward(f);
  TokenizerTrainingOutput out;
  out.reconstruction =
      module_->decoder->forward(module_->post_quant_conv->forward(quantized.f_hat));
  out.regularization = quantized.loss;
  out.terms.emplace_back("vq", quantized.loss.item<double>());
  if (config_.quantizer.dead_code_restart.interval > 0) {
    out.counters.emplace_back("restarted", quantized.restarted_codes);
  }
  out.ids = std::move(quantized.ids);
  return out;
}

std::vector<at::Tensor> MultiScaleVqVae::parameters() const {
  return tokenizer_detail::module_parameters(*module_);
}

std::map<std::string, at::Tensor> MultiScaleVqVae::state_dict() const {
  return tokenizer_detail::module_state_dict(*module_);
}

void MultiScaleVqVae::load_state_dict(const std::map<std::string, at::Tensor>& tensors) {
  tokenizer_detail::load_module_state_dict(*module_, tensors, "multi-scale VQ-VAE");
}

void MultiScaleVqVae::set_training(bool training) { module_->train(training); }
bool MultiScaleVqVae::is_training() const { return module_->is_training(); }
void MultiScaleVqVae::to(at::Device device) { module_->to(device); }
at::Device MultiScaleVqVae::device() const { return tokenizer_detail::module_device(*module_); }

at::Tensor MultiScaleVqVae::codebook() const {
  return module_->quantize->embedding->weight.detach();
}

at::Tensor MultiScaleVqVae::code_hits_per_scale() const {
  return module_->quantize->ema_vocab_hit_SV;
}

}  // namespace tessera
