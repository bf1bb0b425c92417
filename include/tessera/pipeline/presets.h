#pragma once
// Named presets that build exactly the architectures of published checkpoints, so that a
// researcher's weights load by their reference key names (docs/compat.md).
//
//   GeneratorPreset p = generator_preset("var-d16");    // VAR-d16 on ImageNet 256
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

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/pipeline/generator.h"
#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera {

struct GeneratorPreset {
  std::string name;         // "var-d16"
  std::string description;  // one line, with the reference it reproduces
  GeneratorConfig generator{};
  TokenizerConfig tokenizer{};
  // The transformer's parameter count as published (backbone + head), for checks and `info`.
  int64_t published_parameters = 0;
};

// The sizes that vary between VAR models; the named presets are VarArchitecture{depth, 64·depth,
// depth} with the defaults below, and a reference checkpoint's metadata gives the others.
struct VarArchitecture {
  int64_t depth = 16;
  int64_t width = 1024;
  int64_t heads = 16;
  std::vector<int64_t> patch_nums = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  int64_t vocab_size = 4096;
  int64_t vae_channels = 32;  // Cvae
  int64_t vae_base_channels = 160;  // the VQ-VAE's ch
  int64_t share_quant_resi = 4;
  int64_t num_classes = 1000;
  bool shared_adaln = false;
  bool attn_l2_norm = true;
  double norm_eps = 1e-6;
  int64_t image_size = 256;  // patch_nums.back() · 16
};

// The architecture a VAR fixture or converted checkpoint describes in its __metadata__ (the keys
// patch_nums, vocab_size, Cvae, ch, depth, width, heads, num_classes, share_quant_resi, shared_aln,
// attn_l2_norm, norm_eps; see ../shared/parity/README.md). Throws tessera::Error naming a missing
// or malformed key.
VarArchitecture var_architecture_from_metadata(const std::map<std::string, std::string>& metadata);

// VAR's generator and tokenizer configs for an architecture (Note [VAR presets]).
GeneratorPreset var_generator_preset(const VarArchitecture& architecture);

// The names generator_preset() knows, in a stable order.
std::vector<std::string> generator_preset_names();

// The preset of that name; throws tessera::Error listing the known names otherwise.
GeneratorPreset generator_preset(const std::string& name);

// Backbone and head parameters of a generator config, without building the backbone (the head is
// built: it is small next to the backbone).
int64_t transformer_parameter_count(const GeneratorConfig& config);

}  // namespace tessera
