#pragma once
// VAR's own VQ-VAE checkpoints (`vae_ch160v4096z32.pth`, converted to safetensors by
// tools/convert_checkpoint.py) as a MultiScaleVqVae, the architecture read from the file itself.
//
//   std::unique_ptr<MultiScaleVqVae> vae = load_var_vae("vae_ch160v4096z32.safetensors");

#include <filesystem>
#include <memory>

#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"

namespace tessera {

/// The configuration of a VAR vae checkpoint in safetensors form: patch_nums, vocab_size, Cvae,
/// ch and share_quant_resi from __metadata__ (required; quant_resi, using_znorm, beta,
/// ch_mult and num_res_blocks are read when present), the rest of the architecture (levels and
/// their channel multipliers, blocks per level, attention, image channels, quant_conv kernel)
/// from the tensors' names and shapes, checked against the metadata. GroupNorm uses the
/// reference's 32 groups and eps 1e-6.
MultiScaleVqVaeConfig var_vae_config(const SafetensorsFile& file);

/// Builds the model from var_vae_config and loads every tensor under the reference's key names
/// (strict: missing or unexpected keys are an error).
std::unique_ptr<MultiScaleVqVae> load_var_vae(const std::filesystem::path& path);

}  // namespace tessera
