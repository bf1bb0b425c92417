#pragma once
// MAR's KL-16 tokenizer (LTH14/mar, models/vae.py, AutoencoderKL: LDM's design with MAR's
// defaults) as a Tessera KlVae: the architecture read from the state dict's shapes (checked
// against vae.* metadata where the file records it), the tensors loaded by MAR's own key names
// (docs/compat.md, "MAR").
//
//   std::unique_ptr<KlVae> vae = load_mar_vae("kl16.safetensors");
//   Tokens tokens = vae->encode(images);       // posterior mean × 0.2325, patchified
//
// The key names are Tessera's own (the same taming-transformers layout) but for the attention
// blocks, whose separate q, k, v convolutions are stacked into Tessera's qkv
// (compat/separate_qkv_state.h). MAR's encoder attends at its lowest resolution
// (attn_resolutions 16 of 256) and its decoder does not: decoder_lowest_level_attention false.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "tessera/tokenizer/kl_vae.h"
#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera {

/// MAR's scale of the posterior mean (vae_scale_factor / the fixture's vae.scale_factor).
inline constexpr double kMarVaeScale = 0.2325;

/// The KlVae configuration of an AutoencoderKL state dict: channels, levels, blocks per level,
/// z_channels, embed_dim and where attention sits from the tensors' shapes; the scale and the
/// GroupNorm settings from `metadata` (vae.scale_factor, vae.num_groups, vae.norm_eps) or MAR's
/// values (0.2325, 32 groups, eps 1e-6). Throws tessera::Error naming a missing tensor or a
/// metadata value that disagrees with the tensors.
KlVaeConfig mar_vae_config(const std::map<std::string, at::Tensor>& state_dict,
                           const std::map<std::string, std::string>& metadata = {});

/// Loads an AutoencoderKL state dict into `vae` (built from mar_vae_config) strictly: throws
/// tessera::Error naming every missing, unexpected or misshapen key in MAR's names, and changes
/// nothing then. Keys under `loss.` (LDM's training losses, which checkpoints may carry) are
/// skipped.
void load_mar_vae(KlVae& vae, const std::map<std::string, at::Tensor>& state_dict);

/// A KL-16 checkpoint in safetensors form (the parity fixture's vae.safetensors, or kl16.ckpt's
/// "model" converted by tools/convert_checkpoint.py) as a KlVae in evaluation mode.
std::unique_ptr<KlVae> load_mar_vae(const std::filesystem::path& path);

}  // namespace tessera
