#pragma once
// MAR (LTH14/mar, models/mar.py) as a Tessera generator: its MAE encoder and decoder as the two
// backbones of the mar schedule's encoder–decoder split (Note [MAR encoder–decoder split]), its
// DiffLoss as a DiffusionHead (compat/mar_diffloss.h) and its KL-16 VAE as a KlVae
// (compat/mar_vae.h); the architecture read from a state dict's shapes and the tensors loaded by
// MAR's own key names (docs/compat.md, "MAR").
//
//   const MarArchitecture a = mar_architecture(state_dict);
//   GeneratorPreset p = mar_generator_preset(a, mar_kl16_config());
//   Generator generator(p.generator, load_mar_vae("kl16.safetensors"), 0);
//   load_mar_transformer(generator, state_dict);
//
// The key mapping (encoder and decoder are backbones, Tessera's names on the right):
//   z_proj, z_proj_ln                  encoder word_embed, input_norm (BackboneConfig::input_norm)
//   class_emb.weight + fake_latent     encoder class_emb.weight, the null class last
//   encoder_pos_embed_learned          encoder pos_1LC
//   {encoder,decoder}_blocks.i         blocks.i (attn.qkv as attn.mat_qkv, mlp as ffn)
//   encoder_norm, decoder_norm         norm
//   decoder_embed + mask_token         decoder word_embed over [encoder output, mask indicator]:
//                                      weight [W | mask_token − bias] (Note [MAR mask inputs])
//   decoder_pos_embed_learned          decoder pos_1LC
//   diffusion_pos_embed_learned        decoder pos_out (BackboneConfig::output_positions)
//   diffloss.*                         head (prefix removed)

//
// Note [MAR presets]
// mar_base, mar_large and mar_huge (models/mar.py at fe470ac): encoder and decoder of equal size,
// 768 wide with 12 blocks and 12 heads, 1024 / 16 / 16, and 1280 / 20 / 16; MLP ratio 4, qkv
// bias, LayerNorm eps 1e-6, buffer 64, 1000 classes, 256-pixel images through KL-16 (a 16 × 16
// map of 16-channel tokens); DiffLoss 6 blocks of width 1024, 8 of 1280 and 12 of 1536. The
// reference modules count 207,924,768, 478,326,304 and 942,403,104 parameters (the paper: 208M,
// 479M, 943M). The README evaluates them with cfg 2.9, 3.0 and 3.2 on a linear schedule,
// temperature 1.0; main_mar.py's num_iter default is 64 and its diffusion steps 100.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/compat/presets.h"
#include "tessera/head/diffusion_head.h"
#include "tessera/nn/backbone.h"
#include "tessera/pipeline/generator.h"
#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera {

struct MarArchitecture {
  int64_t encoder_width = 768;        ///< encoder_embed_dim
  int64_t encoder_depth = 12;         ///< encoder_depth
  int64_t encoder_heads = 12;         ///< encoder_num_heads
  int64_t decoder_width = 768;        ///< decoder_embed_dim
  int64_t decoder_depth = 12;         ///< decoder_depth
  int64_t decoder_heads = 12;         ///< decoder_num_heads
  int64_t mlp_hidden = 3072;          ///< the blocks' MLP width (mlp_ratio 4 · encoder width)
  int64_t decoder_mlp_hidden = 3072;  ///< the same for the decoder
  int64_t token_channels = 16;        ///< token_embed_dim: the VAE's embed_dim (patch_size 1)
  int64_t grid = 16;                  ///< seq_h: the token map's side (img_size / vae_stride)
  int64_t buffer_size = 64;           ///< buffer_size: class-embedding rows before the tokens
  int64_t num_classes = 1000;         ///< class_num (fake_latent is the null class)
  int64_t diffloss_width = 1024;      ///< diffloss_w
  int64_t diffloss_depth = 6;         ///< diffloss_d
  double norm_eps = 1e-6;             ///< the LayerNorms' epsilon (mar_base's partial(LayerNorm))
};  ///< The sizes of a MAR model (mar_base, mar_large, mar_huge: Note [MAR presets]).

/// A published MAR model (Note [MAR presets]).
struct MarPublishedModel {
  std::string size;                  ///< "b", "l", "h"
  std::string reference_name;        ///< "mar_base", ...
  MarArchitecture architecture;      ///< its sizes
  double cfg = 1.0;                  ///< the README's evaluation cfg (linear schedule)
  int64_t reference_parameters = 0;  ///< the reference module's count, DiffLoss included
};

/// mar_base, mar_large, mar_huge.
const std::vector<MarPublishedModel>& mar_published_models();

/// The architecture of a MAR state dict: widths, depths, MLP widths, token channels, buffer size,
/// classes, grid and the DiffLoss sizes from the tensors' shapes; the head counts from `metadata`
/// (mar.encoder_num_heads, mar.decoder_num_heads) or, without them, from the published model of
/// that width and depth (Note [MAR presets]). Other mar.* keys in `metadata` are checked against
/// the tensors. Throws tessera::Error naming a missing tensor, a disagreeing key, or a size whose
/// head count nothing gives.
MarArchitecture mar_architecture(const std::map<std::string, at::Tensor>& state_dict,
                                 const std::map<std::string, std::string>& metadata = {});

/// The KL-16 VAE MAR's models decode with (LTH14/mar models/vae.py AutoencoderKL(embed_dim=16,
/// ch_mult=(1, 1, 2, 2, 4)), 66,456,019 parameters): ch 128, two blocks per level, attention at
/// the encoder's lowest level and both middles, z 16, scale 0.2325.
KlVaeConfig mar_kl16_config();

/// MAR's sampling as main_mar.py runs it by default: num_iter 64 (the schedule's steps), a linear
/// guidance ramp to `cfg` (Guidance::mar_token_ramp; cfg 1: none), temperature 1.0, 100 diffusion
/// steps of the DDPM sampler; `options` receives guidance, temperature and diffusion steps.
GenerationOptions mar_default_sampling(double cfg);

/// MAR's sampling settings as a fixture's or converted checkpoint's metadata records them, over
/// the generator's: sample.num_iter (the schedule's steps), sample.cfg with sample.cfg_schedule
/// (linear: mar_token_ramp, constant: constant; cfg 1: none), sample.temperature,
/// mar.num_sampling_steps (diffusion steps). Absent keys keep the value; a malformed one is an
/// error naming it.
void apply_mar_sampling_metadata(const std::map<std::string, std::string>& metadata,
                                 GeneratorConfig& generator);

/// The generator of a MAR model over `tokenizer` (a KL VAE of the architecture's token channels):
/// the encoder (mar_style_config with input_norm) and decoder (mar_decoder_config with
/// output_positions) of Note [MAR encoder–decoder split], MAR's DiffLoss head, the mar schedule
/// with encoder_decoder and MAR's buffer, mar_default_sampling(2.9) with 64 steps, 3-channel
/// images of grid · 16 pixels. The family is mar; name and published size are the caller's.
GeneratorPreset mar_generator_preset(const MarArchitecture& architecture,
                                     const KlVaeConfig& tokenizer);

/// Loads a MAR state dict (the `model` or `model_ema` entry of a training checkpoint, converted)
/// into the encoder, decoder and head of a generator built from a MAR preset, strictly: throws
/// tessera::Error naming every missing, unexpected or misshapen tensor by MAR's name before
/// anything is copied.
void load_mar_transformer(Generator& generator,
                          const std::map<std::string, at::Tensor>& state_dict);

}  // namespace tessera
