#pragma once
// A tiny class-conditional MaskGIT over the shipped VQ-VAE's 8x8 ids (V = 256, mask id 256): the
// generator the pipeline tests save, load, convert and train for a few steps.

#include <filesystem>

#include "common/source_paths.h"
#include "tessera/pipeline/generator.h"

namespace tessera::testing {

inline const std::filesystem::path kShippedVqVae =
    tessera::testing::source_dir() / "models/tokenizers/vq_vae_fashion_mnist.safetensors";

inline GeneratorConfig tiny_maskgit_config() {
  GeneratorConfig config;
  config.backbone = maskgit_style_config(/*width=*/32, /*depth=*/1, /*num_heads=*/2,
                                         /*num_tokens=*/64, /*vocab_size=*/257, /*num_classes=*/10);
  config.head.kind = HeadKind::discrete;
  config.head.discrete.width = 32;
  config.head.discrete.vocab_size = 256;
  config.schedule.kind = ScheduleKind::maskgit;
  config.schedule.maskgit.sampling.steps = 4;
  config.sampling.guidance = Guidance::constant(2.0);
  return config;
}

}  // namespace tessera::testing
