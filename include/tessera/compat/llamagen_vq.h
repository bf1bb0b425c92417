#pragma once
// LlamaGen's image tokenizer (FoundationVision/LlamaGen, tokenizer/tokenizer_image/vq_model.py,
// VQModel; VQ-16 and VQ-8) as a Tessera VqVae: the architecture read from the state dict's shapes
// (checked against __metadata__ where the file records it), the tensors loaded by LlamaGen's own
// key names (docs/compat.md, "LlamaGen").
//
//   std::unique_ptr<VqVae> vq = load_llamagen_vq("vq_ds16_c2i.safetensors");
//   Tokens codes = vq->encode(images);                 // VQModel.encode's indices
//
// Note [LlamaGen's VQModel in Tessera's layout]
// LlamaGen's Encoder/Decoder are the taming-transformers design Tessera's ConvEncoder and
// ConvDecoder build, with three differences in names only: the levels are `conv_blocks.i` with
// `res.j` blocks (Tessera, after VAR: `down.i` / `up.i` with `block.j`), the decoder's list runs
// from the lowest resolution up (its `conv_blocks.0` is Tessera's `up.{levels-1}`), the middle
// is a list `mid.0, mid.1, mid.2` (Tessera: `block_1, attn_1, block_2`), and each attention
// block has separate 1x1 `q`, `k`, `v` convolutions where Tessera has one `qkv` convolution
// with 3C outputs; stacking q, k, v along the output channels is that convolution exactly. The
// quantiser with codebook_l2_norm is Tessera's l2_normalized_codes: the nearest code by cosine,
// and codes looked up as unit rows. `quantize.codebook_used` (a training statistic) is skipped.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "tessera/tokenizer/tokenizer_config.h"
#include "tessera/tokenizer/vq_vae.h"

namespace tessera {

/// The VqVae configuration of a LlamaGen VQModel state dict: channels, levels, blocks per level,
/// z_channels, code dimension and codebook size from the tensors' shapes; codebook_l2_norm,
/// commit_loss_beta and the GroupNorm settings from `metadata` (keys vq.*, as the parity fixture
/// and tools/convert_checkpoint.py record them) or LlamaGen's defaults (l2-normalised codes, β
/// 0.25, 32 groups, eps 1e-6). Throws tessera::Error naming a missing tensor or a metadata value
/// that disagrees with the tensors.
VqVaeConfig llamagen_vq_config(const std::map<std::string, at::Tensor>& state_dict,
                               const std::map<std::string, std::string>& metadata = {});

/// LlamaGen's VQ_16 (VQ_8 with `levels` = 4) as vq_model.py's ModelArgs define it: ch 128,
/// channel multipliers 1, 1, 2, 2, 4 (VQ_8: 1, 2, 2, 4), two ResNet blocks per level (the decoder
/// three), z_channels 256, a codebook of `codebook_size` unit vectors of `code_dim` (the
/// published tokenizers: 16384 × 8), β 0.25, RGB images.
VqVaeConfig llamagen_vq_preset_config(int64_t codebook_size = 16384, int64_t code_dim = 8,
                                      int64_t levels = 5);

/// Loads a LlamaGen VQModel state dict into `vq` (built from llamagen_vq_config) by LlamaGen's
/// key names (Note [LlamaGen's VQModel in Tessera's layout]), strictly: throws tessera::Error
/// naming every missing, unexpected or misshapen key in LlamaGen's names, and changes nothing
/// then.
void load_llamagen_vq(VqVae& vq, const std::map<std::string, at::Tensor>& state_dict);

/// A VQModel checkpoint in safetensors form (the parity fixture's tokenizer.safetensors, or
/// vq_ds16_c2i.pt converted by tools/convert_checkpoint.py) as a VqVae in evaluation mode.
std::unique_ptr<VqVae> load_llamagen_vq(const std::filesystem::path& path);

}  // namespace tessera
