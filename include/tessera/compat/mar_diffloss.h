#pragma once
// MAR's DiffLoss head (LTH14/mar, models/diffloss.py: SimpleMLPAdaLN under a Gaussian diffusion)
// as a Tessera DiffusionHead, its sizes read from the tensors of a MAR state dict and its
// `diffloss.*` tensors loaded by MAR's own names (docs/compat.md, "MAR").
//
//   DiffusionHead head(mar_diffloss_config(mar_state_dict), 0);
//   head.load_state_dict(mar_diffloss_state_dict(mar_state_dict));
//
// Tessera's DiffusionHead carries MAR's module names (net.time_embed, net.cond_embed,
// net.input_proj, net.res_blocks.i, net.final_layer), so the mapping is the prefix `diffloss.`
// alone. MAR's diffusion is IDDPM's: a 1000-step cosine schedule, ε prediction, the learned
// variance range (LEARNED_RANGE) when the final layer has 2C outputs.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "tessera/head/head_config.h"

namespace tessera {

/// The DiffusionHead configuration of a MAR state dict's DiffLoss tensors (diffloss.net.…): token
/// channels, condition width, MLP width and depth, timestep features and whether the variance is
/// learned, from their shapes; MAR's cosine schedule over 1000 training steps and its
/// diffusion_batch_mul of 4. Throws tessera::Error naming a missing tensor.
DiffusionHeadConfig mar_diffloss_config(const std::map<std::string, at::Tensor>& state_dict);

/// MAR's DiffLoss of those sizes: SimpleMLPAdaLN over 256 timestep features with the learned
/// variance range, the cosine schedule over 1000 training steps, diffusion_batch_mul 4.
DiffusionHeadConfig mar_diffloss_head_config(int64_t token_channels, int64_t hidden_width,
                                             int64_t width, int64_t depth);

/// The DiffLoss tensors of a MAR state dict under the head's names (the prefix diffloss. removed).
/// Throws tessera::Error when there are none.
std::map<std::string, at::Tensor> mar_diffloss_state_dict(
    const std::map<std::string, at::Tensor>& state_dict);

}  // namespace tessera
