#pragma once
// Named presets that build exactly the architectures of published checkpoints, so that a
// researcher's weights load by their reference key names (docs/compat.md).
//
//   GeneratorPreset p = generator_preset("var-d16");    // VAR-d16 on ImageNet 256 (or hmar-d16)
//   p.generator.backbone.parameter_count() + head       // 310 M, as published
//
// Note [VAR presets]
// VAR-d{depth} (FoundationVision/VAR, models/__init__.py build_vae_var and train.py): width
// 64·depth, depth heads, MLP ratio 4, per-block AdaLN (shared_aln False), q/k L2-norm
// (attn_l2_norm True), LayerNorm eps 1e-6, class-conditional on 1000 classes (the null class 1000),
// condition dropout 0.1, drop path 0.1·depth/24; the 256-pixel pyramid 1, 2, 3, 4, 5, 6, 8, 10,
// 13, 16 (680 tokens) over VAR's VQ-VAE `vae_ch160v4096z32` (ch 160, channel multipliers 1, 1, 2,
// 2, 4, two blocks per level, attention, Cvae 32, codebook 4096, four shared Phi convolutions,
// quant_resi 0.5); the head is VAR's AdaLNBeforeHead + Linear over the codebook. Sampling defaults
// are VAR's demo settings: guidance var_scale_ramp 4, top-k 900, top-p 0.95. The published sizes of
// the transformers are 310 M (d16), 600 M (d20), 1.0 B (d24) and 2.0 B (d30).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tessera/pipeline/generator.h"
#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera {

/// Whose checkpoints a preset reads: which key names its loaders expect.
enum class PresetFamily { var, hmar, llamagen, mar };

struct GeneratorPreset {
  std::string name;         ///< "var-d16"
  std::string description;  ///< one line, with the reference it reproduces
  GeneratorConfig generator{};  ///< the generator
  TokenizerConfig tokenizer{};  ///< its tokenizer
  /// The transformer's parameter count as published (backbone + heads), for checks and `info`,
  /// and where that number comes from.
  int64_t published_parameters = 0;
  std::string parameters_source = "published";  ///< see published_parameters
  /// The reference whose state dicts load into it (build_preset_generator).
  PresetFamily family = PresetFamily::var;
};  ///< A named generator configuration reproducing a reference model.

/// The sizes that vary between VAR models; the named presets are VarArchitecture{depth, 64·depth,
/// depth} with the defaults below, and a reference checkpoint's metadata gives the others.
struct VarArchitecture {
  int64_t depth = 16;  ///< blocks
  int64_t width = 1024;  ///< hidden width
  int64_t heads = 16;  ///< attention heads
  std::vector<int64_t> patch_nums = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16};  ///< scale sides (pn)
  int64_t vocab_size = 4096;  ///< codebook size
  int64_t vae_channels = 32;  ///< Cvae
  int64_t vae_base_channels = 160;  ///< the VQ-VAE's ch
  int64_t share_quant_resi = 4;  ///< VAR's share_quant_resi: number of Phi convolutions
  int64_t num_classes = 1000;  ///< classes (ImageNet: 1000)
  bool shared_adaln = false;  ///< VAR's shared_aln
  bool attn_l2_norm = true;  ///< VAR's attn_l2_norm
  double norm_eps = 1e-6;  ///< the norms' epsilon
  int64_t image_size = 256;  ///< patch_nums.back() · 16
};

/// The architecture a VAR fixture or converted checkpoint describes in its __metadata__ (the keys
/// patch_nums, vocab_size, Cvae, ch, depth, width, heads, num_classes, share_quant_resi,
/// shared_aln, attn_l2_norm, norm_eps; see ../shared/parity/README.md). Throws tessera::Error
/// naming a missing or malformed key.
VarArchitecture var_architecture_from_metadata(const std::map<std::string, std::string>& metadata);

/// VAR's generator and tokenizer configs for an architecture (Note [VAR presets]).
GeneratorPreset var_generator_preset(const VarArchitecture& architecture);

// Note [HMAR presets]
// HMAR-d{depth} (NVlabs/HMAR at 595a9df, models/__init__.py build_vae_hmar, models/hmar.py): VAR's
// sizes and blocks, the same VQ-VAE and pyramid, but the network is split into depth − 8 shared
// base_blocks and two 8-block tails, ns_blocks (next-scale prediction, head ns_head_nm/ns_head)
// and mask_blocks (masked prediction, head mask_head_nm/mask_head); the mask is block-diagonal
// and each scale is one standalone pass (Note [HMAR's Markov step]). In Tessera's parts: a
// backbone of `depth` blocks (base + ns) with branch_blocks = 8 (mask_blocks), the discrete AdaLN
// head and a refinement head, the hmar schedule with HMAR's mask_schedule [[1], [1, 3],
// [1, 1, 2, 5], [16], …], and an input projection over Cvae + 1 channels whose extra column is
// HMAR's mask_embed (Note [HMAR masked refinement]); word_embed (no bias) + word_embed_bias is one
// Linear. Sampling defaults are HMAR's config/sample/hmar-d{depth}.yaml: cfg 1.7 / 1.9 / 2.1 / 1.7
// and top-k 1000 / 950 / 900 / 1000 for d16 / d20 / d24 / d30, top-p 0.99, refinement unguided.
// HMAR's README gives no parameter counts; the presets are checked against the reference module's
// own count (467,691,904 for d16: both tails and both heads).

/// HMAR's tail length (build_vae_hmar's n_layers_train).
inline constexpr int64_t kHmarTailBlocks = 8;

/// HMAR's generator for an architecture (Note [HMAR presets]); tail_blocks = the length of the
/// ns/mask tails (at most depth).
GeneratorPreset hmar_generator_preset(const VarArchitecture& architecture,
                                      int64_t tail_blocks = kHmarTailBlocks);

/// An HMAR state dict (hmar-d16.pth's key names) in Tessera's names, split by part: see the key
/// mapping in docs/compat.md. `tail_start` is depth − tail_blocks (the first ns block's index in
/// the backbone). Throws tessera::Error for a missing word_embed.weight or mask_embed.weight.
struct HmarStateDicts {  /// Each part's tensors. @{
  std::map<std::string, at::Tensor> backbone, head, refinement_head;  /** @} */
  std::vector<std::string> derived;  ///< lvl_1L, attn_bias_for_masking: recomputed, not loaded
};
HmarStateDicts hmar_state_dicts(const std::map<std::string, at::Tensor>& state_dict,
                                int64_t tail_start);  ///< See HmarStateDicts.

/// Loads an HMAR transformer state dict into a generator built from an HMAR preset, strictly
/// (every part's missing, unexpected or mis-shaped keys named, in Tessera's names).
void load_hmar_transformer(Generator& generator,
                           const std::map<std::string, at::Tensor>& state_dict);

/// The names generator_preset() knows, in a stable order.
std::vector<std::string> generator_preset_names();

/// The preset of that name; throws tessera::Error listing the known names otherwise.
GeneratorPreset generator_preset(const std::string& name);

/// Backbone and head parameters of a generator config, without building the backbone (the head is
/// built: it is small next to the backbone).
int64_t transformer_parameter_count(const GeneratorConfig& config);

/// VAR's sampling settings as a fixture's or converted checkpoint's metadata records them, over
/// `defaults`: `cfg` (var_scale_ramp guidance), `top_k` (0 = off) and `top_p` (VAR's 0 = off,
/// which is Tessera's 1). Absent keys keep the default; a malformed one is an error naming it.
GenerationOptions var_sampling_from_metadata(const std::map<std::string, std::string>& metadata,
                                             GenerationOptions defaults);

/// Loads a VAR transformer state dict, by the reference's key names (var_d16.pth converted by
/// tools/convert_checkpoint.py, or a fixture's var.safetensors), into a generator built from a VAR
/// preset: the backbone's and the head's tensors strictly, VAR's derived buffers
/// (var_derived_buffer_keys) skipped. Throws tessera::Error naming every missing, unexpected or
/// mis-shaped key before anything is copied.
void load_var_transformer(Generator& generator,
                          const std::map<std::string, at::Tensor>& state_dict);

/// The preset of `family` that reference metadata describes: the architecture from the keys
/// (var_architecture_from_metadata, or LlamaGen's gpt.* keys: llamagen_architecture_from_metadata)
/// with the sampling settings recorded there (var_sampling_from_metadata,
/// llamagen_sampling_from_metadata). Throws tessera::Error naming a missing or malformed key.
/// MAR's architecture is in its tensors' shapes: for PresetFamily::mar `state_dict` must hold the
/// transformer (mar_architecture; metadata gives head counts and sampling settings,
/// apply_mar_sampling_metadata).
GeneratorPreset preset_from_reference_metadata(
    const std::map<std::string, std::string>& metadata, PresetFamily family,
    const std::map<std::string, at::Tensor>& state_dict = {});

/// The family whose state dict has these keys: LlamaGen's by tok_embeddings.weight, MAR's by
/// z_proj.weight beside diffloss.net.input_proj.weight, HMAR's by its mask token
/// (mask_embed.weight), VAR's otherwise.
PresetFamily reference_family(const std::vector<std::string>& keys);

/// The preset a converted reference checkpoint describes by itself (the family by
/// reference_family): the architecture from its __metadata__ (var_architecture_from_metadata;
/// LlamaGen's gpt.* keys; MAR's from its tensors, mar_architecture), with the sampling settings
/// recorded there (var_sampling_from_metadata); named after the file. Throws tessera::Error naming
/// the file and what its metadata lacks.
GeneratorPreset preset_from_reference_weights(const std::filesystem::path& weights);

struct PresetWeights {
  /// The reference's key names (VAR's, HMAR's or LlamaGen's, after the preset's family); empty:
  /// random (init_seed).
  std::filesystem::path transformer{};
  /// VAR's VQ-VAE or LlamaGen's VQModel (their key names); empty: random weights
  std::filesystem::path tokenizer{};
  uint64_t init_seed = 0;  ///< random initialisation without a transformer file
};  ///< Where build_preset_generator takes weights from.

/// The preset's generator with the given weights. With neither file the weights are random, for
/// speed and memory measurements (the samples mean nothing then).
Generator build_preset_generator(const GeneratorPreset& preset, const PresetWeights& weights);

}  // namespace tessera
