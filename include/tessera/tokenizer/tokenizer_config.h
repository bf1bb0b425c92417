#pragma once
// Tokenizer configurations: typed structs that read from and write to JSON (core/config.h).
// configs/tokenizer/*.json hold examples; docs/tokenizers.md describes every option.
//
// Field names say what a field is; where a field mirrors a reference implementation's argument,
// the comment names that argument (VAR's `ch`, `ch_mult`, `Cvae`, `share_quant_resi`, ...), so a
// reference configuration translates one to one.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/config.h"

namespace tessera {

/// The convolutional encoder and decoder shared by every learned tokenizer: the Stable Diffusion /
/// taming-transformers design that VAR, LlamaGen and MAR use (ResNet blocks with GroupNorm and
/// SiLU, optional self-attention at the lowest resolution and in the middle, stride-2 convolutions
/// down, nearest-neighbour doubling plus a convolution up).
struct ConvAutoencoderConfig {
  int64_t image_channels = 3;   ///< in_channels: 1 for Fashion-MNIST, 3 for RGB
  int64_t base_channels = 128;  ///< ch: channels of the first level
  /// ch_mult: one entry per resolution level; level i has base_channels * multiplier[i] channels
  /// and every level but the last halves the resolution (downsampling 2^(levels-1)).
  std::vector<int64_t> channel_multipliers = {1, 1, 2, 2, 4};
  int64_t res_blocks_per_level = 2;  ///< num_res_blocks (the decoder has one more per level)
  /// using_sa: self-attention after every ResNet block of the lowest-resolution level.
  bool lowest_level_attention = true;
  /// The same for the decoder when it differs from the encoder (MAR's KL-16: attention in the
  /// encoder's lowest level only, attn_resolutions empty in its decoder); null: as
  /// lowest_level_attention.
  std::optional<bool> decoder_lowest_level_attention{};
  bool middle_attention = true;  ///< using_mid_sa: self-attention between the two middle blocks
  int64_t latent_channels = 32;  ///< z_channels: channels the encoder emits (Cvae in VAR)
  int64_t norm_groups = 32;      ///< GroupNorm groups; every channel count must be divisible by it
  double norm_eps = 1e-6;  ///< GroupNorm's epsilon
  double dropout = 0.0;  ///< inside ResNet blocks, training only

  /// 2^(levels-1): image height and width must be multiples of it.
  int64_t downsampling_factor() const;
  /// Channels of level i: base_channels * channel_multipliers[i].
  int64_t level_channels(size_t level) const;

  template <class Visitor>
  void visit(Visitor& v) {
    v("image_channels", image_channels);
    v("base_channels", base_channels);
    v("channel_multipliers", channel_multipliers);
    v("res_blocks_per_level", res_blocks_per_level);
    v("lowest_level_attention", lowest_level_attention);
    v("decoder_lowest_level_attention", decoder_lowest_level_attention);
    v("middle_attention", middle_attention);
    v("latent_channels", latent_channels);
    v("norm_groups", norm_groups);
    v("norm_eps", norm_eps);
    v("dropout", dropout);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  /// Checks positivity, and that GroupNorm can split every channel count it will see.
  void validate() const;
};

/// How a codebook learns: from the gradient of ‖sg[z] − e‖² (VQ-VAE, VAR, LlamaGen), or as an
/// exponential moving average of the encoder outputs assigned to each code (VQ-VAE-2).
enum class CodebookUpdate { gradient, ema };

template <>
struct ConfigEnum<CodebookUpdate> {  /// Each value with its name.
  static constexpr std::pair<CodebookUpdate, const char*> values[] = {
      {CodebookUpdate::gradient, "gradient"}, {CodebookUpdate::ema, "ema"}};
};  ///< The names of CodebookUpdate values in JSON configs.

/// Dead-code restart: a code whose moving-average hit count falls below a threshold is re-drawn
/// from the current batch's encoder outputs (Jukebox, SoundStream), so that codes the encoder never
/// reaches do not stay wasted for the whole run.
struct DeadCodeRestartConfig {
  int64_t interval = 0;  ///< check every this many training steps; 0 disables restarts
  /// A code is dead when its moving-average number of hits per training step is below this.
  double min_hits = 0.03;
  double hit_decay = 0.99;  ///< decay of the per-code hit-count moving average

  template <class Visitor>
  void visit(Visitor& v) {
    v("interval", interval);
    v("min_hits", min_hits);
    v("hit_decay", hit_decay);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};

/// A single-scale vector quantiser (VQ-VAE; LlamaGen's with L2-normalised codes).
struct VectorQuantizerConfig {
  int64_t codebook_size = 1024;  ///< V: number of codes
  int64_t code_dim = 8;             ///< codebook_embed_dim: a 1x1/3x3 conv maps latents to it
  double commitment_weight = 0.25;  ///< β in β‖z − sg[e]‖²
  double codebook_weight = 1.0;     ///< weight of ‖sg[z] − e‖² (gradient update only)
  CodebookUpdate codebook_update = CodebookUpdate::gradient;  ///< gradient or ema
  double ema_decay = 0.99;           ///< codebook_update "ema": decay of counts and sums
  double ema_epsilon = 1e-5;         ///< Laplace smoothing of the EMA counts
  bool l2_normalized_codes = false;  ///< LlamaGen: codes and latents on the unit sphere
  DeadCodeRestartConfig dead_code_restart{};  ///< restarts of unused codes

  template <class Visitor>
  void visit(Visitor& v) {
    v("codebook_size", codebook_size);
    v("code_dim", code_dim);
    v("commitment_weight", commitment_weight);
    v("codebook_weight", codebook_weight);
    v("codebook_update", codebook_update);
    v("ema_decay", ema_decay);
    v("ema_epsilon", ema_epsilon);
    v("l2_normalized_codes", l2_normalized_codes);
    v("dead_code_restart", dead_code_restart);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};

/// VAR's multi-scale residual quantiser (VectorQuantizer2). The code dimension is the autoencoder's
/// latent_channels (Cvae).
struct MultiScaleQuantizerConfig {
  int64_t codebook_size = 4096;  ///< vocab_size
  /// v_patch_nums: side of each scale's token grid, coarse to fine, strictly increasing; the last
  /// must equal the latent side (image side / downsampling factor).
  std::vector<int64_t> patch_nums = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  double commitment_weight = 0.25;  ///< beta
  /// quant_resi: Phi(h) = (1 − r)·h + r·conv3x3(h); |r| <= 1e-6 makes Phi the identity (and
  /// parameter-free). The reference uses |quant_resi|.
  double phi_residual_ratio = 0.5;
  /// share_quant_resi: 0 = one Phi per scale, 1 = one Phi shared by all scales, K >= 2 = K Phis
  /// shared by nearest tick (see Note [Choosing Phi] in multiscale_vq_vae.h).
  int64_t phi_count = 4;
  bool l2_normalized_codes = false;  ///< using_znorm: nearest code by cosine similarity
  DeadCodeRestartConfig dead_code_restart{};  ///< restarts of unused codes

  template <class Visitor>
  void visit(Visitor& v) {
    v("codebook_size", codebook_size);
    v("patch_nums", patch_nums);
    v("commitment_weight", commitment_weight);
    v("phi_residual_ratio", phi_residual_ratio);
    v("phi_count", phi_count);
    v("l2_normalized_codes", l2_normalized_codes);
    v("dead_code_restart", dead_code_restart);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};

struct VqVaeConfig {
  ConvAutoencoderConfig autoencoder{};  ///< encoder and decoder
  VectorQuantizerConfig quantizer{};  ///< the quantiser
  int64_t quant_conv_kernel_size = 1;  ///< latent_channels -> code_dim and back (LlamaGen: 1)

  template <class Visitor>
  void visit(Visitor& v) {
    v("autoencoder", autoencoder);
    v("quantizer", quantizer);
    v("quant_conv_kernel_size", quant_conv_kernel_size);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< A single-scale VQ-VAE (VqVae): autoencoder and quantiser.

struct MultiScaleVqVaeConfig {
  ConvAutoencoderConfig autoencoder{};  ///< encoder and decoder
  MultiScaleQuantizerConfig quantizer{};  ///< the multi-scale quantiser
  int64_t quant_conv_kernel_size = 3;  ///< quant_conv_ks: Cvae -> Cvae before and after quantising

  template <class Visitor>
  void visit(Visitor& v) {
    v("autoencoder", autoencoder);
    v("quantizer", quantizer);
    v("quant_conv_kernel_size", quant_conv_kernel_size);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< VAR's multi-scale VQ-VAE (MultiScaleVqVae): autoencoder and quantiser.

/// A KL-regularised autoencoder (LDM's AutoencoderKL, MAR's KL-16): the encoder emits a diagonal
/// Gaussian per latent position; tokens are latent vectors times latent_scale.
struct KlVaeConfig {
  /// autoencoder.latent_channels is z_channels; the encoder emits twice that (mean, log-variance)
  ConvAutoencoderConfig autoencoder{};
  int64_t token_channels = 16;   ///< embed_dim: channels of the Gaussian latent (MAR: 16)
  double kl_weight = 1e-6;       ///< weight of KL(q(z|x) ‖ N(0, I)), summed over latent elements
  double latent_scale = 0.2325;  ///< tokens = latent * latent_scale (MAR's vae_scale_factor)

  template <class Visitor>
  void visit(Visitor& v) {
    v("autoencoder", autoencoder);
    v("token_channels", token_channels);
    v("kl_weight", kl_weight);
    v("latent_scale", latent_scale);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};

/// Pixel-space tokens: each patch_size x patch_size patch flattened to one vector (C·p·p values,
/// channel-major within the patch). No parameters.
struct PatchTokenizerConfig {
  int64_t image_channels = 1;  ///< channels of the images
  int64_t patch_size = 2;  ///< side of a patch, in pixels

  template <class Visitor>
  void visit(Visitor& v) {
    v("image_channels", image_channels);
    v("patch_size", patch_size);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};
/// Which tokenizer a TokenizerConfig builds.
enum class TokenizerKind { vq_vae, multiscale_vq_vae, kl_vae, patch };

template <>
struct ConfigEnum<TokenizerKind> {  /// Each value with its name.
  static constexpr std::pair<TokenizerKind, const char*> values[] = {
      {TokenizerKind::vq_vae, "vq_vae"},
      {TokenizerKind::multiscale_vq_vae, "multiscale_vq_vae"},
      {TokenizerKind::kl_vae, "kl_vae"},
      {TokenizerKind::patch, "patch"}};
};  ///< The names of TokenizerKind values in JSON configs.

const char* tokenizer_kind_name(TokenizerKind kind);  ///< The kind's name in configs.

/// Which tokenizer, and its settings. Only the section named by `kind` may be present; an absent
/// section means that kind's defaults.
struct TokenizerConfig {
  TokenizerKind kind = TokenizerKind::vq_vae;  ///< which tokenizer
  std::optional<VqVaeConfig> vq_vae{};  ///< for kind vq_vae
  std::optional<MultiScaleVqVaeConfig> multiscale_vq_vae{};  ///< for kind multiscale_vq_vae
  std::optional<KlVaeConfig> kl_vae{};  ///< for kind kl_vae
  std::optional<PatchTokenizerConfig> patch{};  ///< for kind patch

  /// The section of `kind`, or its defaults when absent. @{
  VqVaeConfig vq_vae_or_default() const { return vq_vae.value_or(VqVaeConfig{}); }
  MultiScaleVqVaeConfig multiscale_vq_vae_or_default() const {
    return multiscale_vq_vae.value_or(MultiScaleVqVaeConfig{});
  }
  KlVaeConfig kl_vae_or_default() const { return kl_vae.value_or(KlVaeConfig{}); }
  PatchTokenizerConfig patch_or_default() const { return patch.value_or(PatchTokenizerConfig{}); }
  /** @} */
  template <class Visitor>
  void visit(Visitor& v) {
    v("kind", kind);
    v("vq_vae", vq_vae);
    v("multiscale_vq_vae", multiscale_vq_vae);
    v("kl_vae", kl_vae);
    v("patch", patch);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};

}  // namespace tessera
