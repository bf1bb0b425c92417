#pragma once
// LlamaGen's class-conditional GPT (FoundationVision/LlamaGen, autoregressive/models/gpt.py) as a
// Tessera backbone and discrete head, its configuration read from a checkpoint's __metadata__ and
// its state dict loaded by the reference's own key names (docs/compat.md, "LlamaGen").
//
//   const LlamagenArchitecture a = llamagen_architecture_from_metadata(file.metadata());
//   Backbone backbone(llamagen_backbone_config(a), 0);
//   DiscreteHead head(llamagen_head_config(a));
//   load_llamagen_transformer(backbone, head, file.all());
//
// Teacher forcing: backbone.forward(codes[:, :-1], labels, BlockMask::causal(L)) then
// head.logits(hidden) gives GPT.forward(idx=codes[:, :-1], cond_idx=labels)'s logits, the class
// token's row predicting code 0.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "tessera/compat/presets.h"
#include "tessera/head/discrete_head.h"
#include "tessera/head/head_config.h"
#include "tessera/nn/backbone.h"
#include "tessera/nn/backbone_config.h"
#include "tessera/pipeline/generator.h"
#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera {

struct LlamagenArchitecture {
  int64_t width = 0;        ///< gpt.dim
  int64_t depth = 0;        ///< gpt.n_layer
  int64_t heads = 0;        ///< gpt.n_head (gpt.n_kv_head must be None: no grouped-query attention)
  int64_t vocab_size = 0;   ///< gpt.vocab_size: the VQ codebook size
  int64_t num_classes = 0;  ///< gpt.num_classes (the null class for guidance is this id)
  int64_t grid = 0;         ///< grid_size: the token map's side (block_size = grid²)
  int64_t ffn_hidden = 0;   ///< the SwiGLU hidden size (gpt.ffn_hidden_dim, or LlamaGen's rule)
  double norm_eps = 1e-5;   ///< gpt.norm_eps: RMSNorm's epsilon
  double rope_base = 10000;  ///< gpt.rope_base
};  ///< The sizes of a LlamaGen c2i GPT, as its checkpoint metadata records them.

/// LlamaGen's FeedForward hidden size for a width: find_multiple(int(2·4·dim/3), multiple_of).
int64_t llamagen_ffn_hidden(int64_t width, int64_t multiple_of = 256);

/// Reads the keys gpt.dim, gpt.n_layer, gpt.n_head, ... and grid_size (tools/convert_checkpoint.py and the parity fixture
/// record them). Throws tessera::Error naming a missing or malformed key, and for what Tessera does
/// not run: a model type other than c2i, 1-D RoPE, grouped-query attention, more than one class
/// token, or a block size other than grid².
LlamagenArchitecture llamagen_architecture_from_metadata(
    const std::map<std::string, std::string>& metadata);

/// The backbone: llamagen_style_config with the architecture's sizes, epsilon and RoPE base.
BackboneConfig llamagen_backbone_config(const LlamagenArchitecture& architecture);

/// The head: LlamaGen's `output` Linear (no bias) over the final RMSNorm's output.
DiscreteHeadConfig llamagen_head_config(const LlamagenArchitecture& architecture);

/// LlamaGen's sampling as autoregressive/sample/sample_c2i.py runs it by default: cfg_scale 4.0
/// (constant guidance u + (c − u)·s on every token, cfg_interval −1), temperature 1.0, top-k 2000,
/// top-p 1.0 (top-k capped at the vocabulary).
GenerationOptions llamagen_default_sampling(int64_t vocab_size);

/// LlamaGen's sampling settings as a fixture's or converted checkpoint's metadata records them,
/// over `defaults`: cfg_scale (≤ 1: no guidance, as generate() skips the unconditional half),
/// cfg_interval (−1: every token; k ≥ 0: the prefill token and k + 1 more are guided, then the
/// conditional logits alone: Guidance::cutoff(s, k + 2)), temperature, top_k (0 = off), top_p.
/// Absent keys keep the default; a malformed one is an error naming it.
GenerationOptions llamagen_sampling_from_metadata(
    const std::map<std::string, std::string>& metadata, GenerationOptions defaults);

/// The generator of a LlamaGen c2i model over `tokenizer` (a VQ-16 or VQ-8 configuration,
/// llamagen_vq.h): the backbone and head above, the raster schedule with a KV cache,
/// llamagen_default_sampling, images of grid · downsampling pixels with 3 channels. The preset's
/// family is llamagen; its name and published size are the caller's.
GeneratorPreset llamagen_generator_preset(const LlamagenArchitecture& architecture,
                                          const VqVaeConfig& tokenizer);

/// Loads a GPT state dict under LlamaGen's key names (tok_embeddings, cls_embedding, layers.i.*,
/// norm, output) strictly: throws tessera::Error naming missing, unexpected or misshapen keys,
/// and changes nothing then. The rotary table LlamaGen keeps as a buffer (freqs_cis) is
/// recomputed, not loaded.
void load_llamagen_transformer(Backbone& backbone, DiscreteHead& head,
                               const std::map<std::string, at::Tensor>& state_dict);

/// The same into a generator built from a LlamaGen preset (its head must be discrete and
/// linear); throws tessera::Error otherwise.
void load_llamagen_transformer(Generator& generator,
                               const std::map<std::string, at::Tensor>& state_dict);

}  // namespace tessera
