#pragma once
// Small models for the next-scale schedule tests: a multi-scale VQ-VAE over 32x32 greyscale
// images (downsampling 8, scales 1, 2, 3, 4: 30 tokens), a VAR-style backbone and VAR's AdaLN head.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/head/head.h"
#include "tessera/nn/backbone.h"
#include "tessera/schedule/schedule.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"

namespace tessera::test {

inline constexpr int64_t kImageSize = 32;
inline constexpr int64_t kClasses = 10;

inline MultiScaleVqVaeConfig small_vqvae_config(int64_t codebook = 32, int64_t cvae = 8) {
  MultiScaleVqVaeConfig c;
  auto& ae = c.autoencoder;
  ae.image_channels = 1;
  ae.base_channels = 8;
  ae.channel_multipliers = {1, 1, 2, 2};  // downsampling 8: 32x32 -> 4x4
  ae.res_blocks_per_level = 1;
  ae.lowest_level_attention = false;
  ae.middle_attention = false;
  ae.latent_channels = cvae;
  ae.norm_groups = 4;
  c.quantizer.codebook_size = codebook;
  c.quantizer.patch_nums = {1, 2, 3, 4};
  c.quantizer.phi_count = 4;
  return c;
}

// A VAR-style backbone (width 32·depth-ish, tiny) over the tokenizer's pyramid; `extra_channels`
// 1 adds HMAR's mask-indicator channel.
inline BackboneConfig small_backbone_config(const MultiScaleVqVae& vq, int64_t width = 64,
                                            int64_t depth = 2, int64_t heads = 2,
                                            int64_t extra_channels = 0) {
  BackboneConfig c = var_style_config(width, depth, heads, vq.patch_nums(),
                                      vq.token_channels() + extra_channels, kClasses);
  return c;
}

inline HeadConfig var_head_config(int64_t width, int64_t vocab) {
  HeadConfig h;
  h.kind = HeadKind::discrete;
  h.discrete.width = width;
  h.discrete.vocab_size = vocab;
  h.discrete.projection = DiscreteProjection::adaln;
  h.discrete.condition_width = width;
  return h;
}

struct SmallModels {
  std::unique_ptr<MultiScaleVqVae> tokenizer;
  std::unique_ptr<Backbone> backbone;
  std::unique_ptr<Head> head;

  ScheduleModels models() { return {*backbone, *head, tokenizer.get()}; }
  std::vector<TokenGridSize> grids() const {
    return tokenizer->token_grids(kImageSize, kImageSize);
  }
};

inline SmallModels make_small_models(uint64_t seed = 0, int64_t extra_channels = 0,
                                     int64_t width = 64, int64_t depth = 2) {
  SmallModels m;
  m.tokenizer = std::make_unique<MultiScaleVqVae>(small_vqvae_config(), seed);
  BackboneConfig bc = small_backbone_config(*m.tokenizer, width, depth, 2, extra_channels);
  m.backbone = std::make_unique<Backbone>(bc, seed + 1);
  m.head = make_head(var_head_config(width, m.tokenizer->vocab_size()), seed + 2);
  // VAR's initialisation makes every block nearly the identity (AdaLN gains of 1e-5), so a fresh
  // model barely attends; perturbed weights make the samplers' results depend on what each
  // position sees, which the sampling tests need.
  {
    at::NoGradGuard no_grad;
    at::Generator g = make_cpu_generator(seed + 3);
    for (at::Tensor& p : m.backbone->parameters()) p.add_(at::randn(p.sizes(), g) * 0.2);
    for (at::Tensor& p : m.head->parameters()) p.add_(at::randn(p.sizes(), g) * 0.2);
  }
  m.backbone->set_training(false);
  m.head->set_training(false);
  return m;
}

}  // namespace tessera::test
