#include "tessera/tokenizer/tokenizer_config.h"

#include <cmath>

#include "tessera/core/error.h"

namespace tessera {

int64_t ConvAutoencoderConfig::downsampling_factor() const {
  return int64_t{1} << (channel_multipliers.empty() ? 0 : channel_multipliers.size() - 1);
}

int64_t ConvAutoencoderConfig::level_channels(size_t level) const {
  TESSERA_CHECK(level < channel_multipliers.size(), "level {} is out of range: {} levels", level,
                channel_multipliers.size());
  return base_channels * channel_multipliers[level];
}

void ConvAutoencoderConfig::validate() const {
  TESSERA_CHECK(image_channels > 0, "image_channels must be positive, got {}", image_channels);
  TESSERA_CHECK(base_channels > 0, "base_channels must be positive, got {}", base_channels);
  TESSERA_CHECK(!channel_multipliers.empty() && channel_multipliers.size() <= 16,
                "channel_multipliers must have 1 to 16 entries (one per level), got {}",
                channel_multipliers.size());
  for (size_t i = 0; i < channel_multipliers.size(); ++i) {
    TESSERA_CHECK(channel_multipliers[i] > 0, "channel_multipliers[{}] must be positive, got {}", i,
                  channel_multipliers[i]);
  }
  TESSERA_CHECK(res_blocks_per_level > 0, "res_blocks_per_level must be positive, got {}",
                res_blocks_per_level);
  TESSERA_CHECK(latent_channels > 0, "latent_channels must be positive, got {}", latent_channels);
  TESSERA_CHECK(norm_groups > 0, "norm_groups must be positive, got {}", norm_groups);
  TESSERA_CHECK(norm_eps > 0, "norm_eps must be positive, got {}", norm_eps);
  TESSERA_CHECK(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got {}", dropout);
  // Every GroupNorm in the encoder and decoder normalises a level's channel count (the first
  // level's is base_channels * multiplier[0], and ResNet blocks also see base_channels itself).
  auto check_groups = [&](int64_t channels, const char* where) {
    TESSERA_CHECK(channels % norm_groups == 0,
                  "GroupNorm cannot split {} channels ({}) into norm_groups={} groups: every "
                  "channel count (base_channels * channel_multipliers[i], and base_channels) must "
                  "be divisible by norm_groups",
                  channels, where, norm_groups);
  };
  check_groups(base_channels, "base_channels");
  for (size_t i = 0; i < channel_multipliers.size(); ++i) {
    check_groups(level_channels(i), "a level's channels");
  }
}

void DeadCodeRestartConfig::validate() const {
  TESSERA_CHECK(interval >= 0, "dead_code_restart.interval must be >= 0, got {}", interval);
  TESSERA_CHECK(min_hits >= 0, "dead_code_restart.min_hits must be >= 0, got {}", min_hits);
  TESSERA_CHECK(hit_decay >= 0 && hit_decay < 1,
                "dead_code_restart.hit_decay must be in [0, 1), got {}", hit_decay);
}

void VectorQuantizerConfig::validate() const {
  TESSERA_CHECK(codebook_size >= 2, "codebook_size must be at least 2, got {}", codebook_size);
  TESSERA_CHECK(code_dim > 0, "code_dim must be positive, got {}", code_dim);
  TESSERA_CHECK(commitment_weight >= 0, "commitment_weight must be >= 0, got {}",
                commitment_weight);
  TESSERA_CHECK(codebook_weight >= 0, "codebook_weight must be >= 0, got {}", codebook_weight);
  TESSERA_CHECK(ema_decay > 0 && ema_decay < 1, "ema_decay must be in (0, 1), got {}", ema_decay);
  TESSERA_CHECK(ema_epsilon > 0, "ema_epsilon must be positive, got {}", ema_epsilon);
  dead_code_restart.validate();
}

void MultiScaleQuantizerConfig::validate() const {
  TESSERA_CHECK(codebook_size >= 2, "codebook_size must be at least 2, got {}", codebook_size);
  // Note [One scale]: the reference picks scale si's Phi by si / (S - 1), a division by zero when
  // S = 1 (Python raises ZeroDivisionError), so VAR's quantiser has no single-scale form; a
  // single-scale tokenizer is the plain vq_vae.
  TESSERA_CHECK(patch_nums.size() >= 2,
                "patch_nums needs at least two scales (VAR picks each scale's Phi by si/(S-1), "
                "undefined for S=1; use the vq_vae tokenizer for one scale), got {} entries",
                patch_nums.size());
  for (size_t i = 0; i < patch_nums.size(); ++i) {
    TESSERA_CHECK(patch_nums[i] > 0, "patch_nums[{}] must be positive, got {}", i, patch_nums[i]);
    TESSERA_CHECK(i == 0 || patch_nums[i] > patch_nums[i - 1],
                  "patch_nums must be strictly increasing, got {} after {} at index {}",
                  patch_nums[i], patch_nums[i - 1], i);
  }
  TESSERA_CHECK(commitment_weight >= 0, "commitment_weight must be >= 0, got {}",
                commitment_weight);
  TESSERA_CHECK(std::abs(phi_residual_ratio) <= 1,
                "phi_residual_ratio must be in [-1, 1] (its magnitude is used), got {}",
                phi_residual_ratio);
  TESSERA_CHECK(phi_count >= 0, "phi_count must be >= 0 (0: one per scale), got {}", phi_count);
  dead_code_restart.validate();
}

void VqVaeConfig::validate() const {
  TESSERA_CHECK(quant_conv_kernel_size > 0 && quant_conv_kernel_size % 2 == 1,
                "quant_conv_kernel_size must be a positive odd number, got {}",
                quant_conv_kernel_size);
}

void MultiScaleVqVaeConfig::validate() const {
  TESSERA_CHECK(quant_conv_kernel_size > 0 && quant_conv_kernel_size % 2 == 1,
                "quant_conv_kernel_size must be a positive odd number, got {}",
                quant_conv_kernel_size);
}

void KlVaeConfig::validate() const {
  TESSERA_CHECK(token_channels > 0, "token_channels must be positive, got {}", token_channels);
  TESSERA_CHECK(kl_weight >= 0, "kl_weight must be >= 0, got {}", kl_weight);
  TESSERA_CHECK(latent_scale > 0, "latent_scale must be positive, got {}", latent_scale);
}

void PatchTokenizerConfig::validate() const {
  TESSERA_CHECK(image_channels > 0, "image_channels must be positive, got {}", image_channels);
  TESSERA_CHECK(patch_size > 0, "patch_size must be positive, got {}", patch_size);
}

const char* tokenizer_kind_name(TokenizerKind kind) {
  for (const auto& [value, name] : ConfigEnum<TokenizerKind>::values) {
    if (value == kind) return name;
  }
  return "unknown";
}

void TokenizerConfig::validate() const {
  auto check_section = [&](bool present, TokenizerKind section_kind) {
    TESSERA_CHECK(!present || kind == section_kind,
                  "section '{}' is present but kind is '{}'; give only the section of the chosen "
                  "kind",
                  tokenizer_kind_name(section_kind), tokenizer_kind_name(kind));
  };
  check_section(vq_vae.has_value(), TokenizerKind::vq_vae);
  check_section(multiscale_vq_vae.has_value(), TokenizerKind::multiscale_vq_vae);
  check_section(kl_vae.has_value(), TokenizerKind::kl_vae);
  check_section(patch.has_value(), TokenizerKind::patch);
  // Sections read from JSON were validated by the reader; defaults and hand-built configs are
  // checked here so that a model is never built from an invalid one.
  switch (kind) {
    case TokenizerKind::vq_vae: {
      const VqVaeConfig c = vq_vae_or_default();
      c.autoencoder.validate();
      c.quantizer.validate();
      c.validate();
      break;
    }
    case TokenizerKind::multiscale_vq_vae: {
      const MultiScaleVqVaeConfig c = multiscale_vq_vae_or_default();
      c.autoencoder.validate();
      c.quantizer.validate();
      c.validate();
      break;
    }
    case TokenizerKind::kl_vae: {
      const KlVaeConfig c = kl_vae_or_default();
      c.autoencoder.validate();
      c.validate();
      break;
    }
    case TokenizerKind::patch:
      patch_or_default().validate();
      break;
  }
}

}  // namespace tessera
