#pragma once
// The transformer backbone: a stack of pre-norm blocks over a token sequence under a BlockMask,
// with a class condition (AdaLN and/or condition tokens), position encodings, and an optional KV
// cache for incremental decoding.
//
//   train:  out = backbone.forward(inputs, labels, BlockMask::block_causal(layout));
//   decode: KVCache cache = backbone.make_kv_cache(batch);
//           for each step [begin, end):
//             out = backbone.forward(step_inputs, labels, full_mask.rows(begin, end),
//                                    {.cache = &cache});
//
// Note [Backbone rows and inputs]
// A call covers positions [begin, begin + n) of the sequence (n = the mask's query length; begin
// defaults to the cache's length, or 0). Rows at condition positions (p < condition_tokens) hold
// the class embedding (plus pos_start), not an input. `inputs` holds either the n rows of the
// call (inputs at condition rows are ignored; token ids there must still be valid ids) or only
// the rows after the condition rows (VAR's x_BLCv_wo_first_l, LlamaGen's idx); a call made of
// condition rows only may pass undefined inputs. The output has n rows: the hidden state of every
// position of the call, condition rows included (LlamaGen's class token predicts token 0).
//
// Note [Backbone parameter names]
// Modules and parameters carry VAR's names (models/var.py, models/basic_var.py), so a VAR
// checkpoint loads directly (see load_state_dict and docs/backbone.md):
//   word_embed.{weight,bias}          input projection (Linear for vectors, Embedding for ids)
//   class_emb.weight                  [num_classes + 1, width]; the last row is the null class
//   pos_start                         [1, condition_tokens, width]
//   pos_1LC                           [1, max_length, width] learned absolute positions
//   lvl_embed.weight                  [segments, width]
//   shared_ada_lin.1.{weight,bias}    shared AdaLN
//   blocks.i.ada_lin.1.{weight,bias}  per-block AdaLN;  blocks.i.ada_gss (shared AdaLN)
//   blocks.i.norm1 / norm2            pre-norms with affine parameters (absent without affine)
//   blocks.i.attn.mat_qkv.weight (+ .bias with QkvBias::all), attn.q_bias, attn.v_bias,
//   blocks.i.attn.zero_k_bias (a zero buffer), attn.scale_mul_1H11, attn.proj.{weight,bias}
//   blocks.i.ffn.fc1 / fc2 (GELU MLPs);  blocks.i.ffn.w1 / w3 / w2 (SwiGLU, LlamaGen's names)
//   branch_blocks.j.…                 the branch tail (BackboneConfig::branch_blocks), as blocks
//   norm.{weight,bias}                final norm;  head_nm.ada_lin.1.{weight,bias}  AdaLN final
// VAR's derived buffers `lvl_1L` and `attn_bias_for_masking` are recomputed from the layout and
// skipped when loading. llamagen_key_renames() maps LlamaGen's names onto these.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"
#include "tessera/attention/token_layout.h"
#include "tessera/nn/backbone_config.h"
#include "tessera/nn/kv_cache.h"
#include "tessera/nn/state_dict.h"

namespace torch::nn {
class Module;
}

namespace tessera {

namespace nn_detail {
class BackboneNet;
}

struct BackboneForwardOptions {
  /// Incremental decoding: the call's keys and values are appended to the cache and its queries
  /// attend against every cached position. See Note [Decoding against a KV cache].
  KVCache* cache = nullptr;
  /// The call's first position in the sequence. Default: the cache's length, or 0 without a cache.
  /// With a cache it must equal the cache's length.
  std::optional<int64_t> begin{};
  /// Explicit sequence positions of the call's rows, int64 [n] or [B, n] (gathered subsets, as
  /// MAR's encoder runs on the unmasked tokens only). Default: begin, begin + 1, ….
  at::Tensor positions{};
  /// Training draws (condition dropout, drop path); the global generator when empty.
  std::optional<at::Generator> generator{};
  AttentionBackend attention_backend = AttentionBackend::automatic;  ///< the attention kernel
  /// Run the branch blocks for the tail (BackboneConfig::branch_blocks; HMAR's masked-prediction
  /// blocks). Needs a config with branch blocks and no cache (the cache holds one tail's keys).
  bool branch = false;
};  ///< Options of one Backbone::forward call.

struct BackboneOutput {
  at::Tensor hidden;  ///< [B, n, width]: every row of the call, after the final norm
  /// [B, width]: the class embedding after condition dropout (VAR's cond_BD), what an AdaLN head
  /// takes; undefined for an unconditional backbone.
  at::Tensor condition;
};  ///< What Backbone::forward returns.

class Backbone {
 public:
  /// Fresh parameters drawn from a generator seeded with `seed` (see docs/backbone.md for the
  /// initialisation). Throws tessera::Error for an invalid config.
  explicit Backbone(const BackboneConfig& config, uint64_t seed = 0);
  ~Backbone();
  Backbone(Backbone&&) noexcept;  ///< Moves; the source is not usable afterwards.
  Backbone& operator=(Backbone&&) noexcept;  ///< Moves; the source is not usable afterwards.
  Backbone(const Backbone&) = delete;
  Backbone& operator=(const Backbone&) = delete;

  const BackboneConfig& config() const { return config_; }  ///< Its configuration.
  int64_t width() const { return config_.width; }  ///< Hidden width.
  int64_t depth() const { return config_.depth; }  ///< Number of blocks.
  int64_t num_heads() const { return config_.num_heads; }  ///< Attention heads per block.
  int64_t head_dim() const { return config_.head_dim(); }  ///< width / num_heads.
  int64_t max_length() const { return config_.max_length(); }  ///< Longest sequence.
  const TokenLayout& layout() const { return layout_; }  ///< The segments.
  /// The null (unconditional) class id: num_classes.
  int64_t null_class() const { return config_.num_classes; }

  /// inputs: int64 [B, m] ids or float [B, m, input_channels] (see Note [Backbone rows and
  /// inputs]); labels: int64 [B] class ids in [0, num_classes] (num_classes = null), undefined for
  /// an unconditional backbone; mask: query length n = the call's rows.
  /// Without a cache the keys are the call's own rows: a mask of n keys, or one in sequence
  /// coordinates (e.g. full.rows(begin, end)) whose rows see only keys in [begin, begin + n).
  /// With a cache the key index is the cache slot: key length begin + n (or more, if the rows see
  /// nothing past begin + n). Throws tessera::Error for shapes, labels or masks that do not fit.
  BackboneOutput forward(const at::Tensor& inputs, const at::Tensor& labels, const BlockMask& mask,
                         const BackboneForwardOptions& options = {});

  /// A cache for this backbone on its device: capacity defaults to max_length(); dtype defaults to
  /// the dtype the keys are computed in: autocast's for the device when it is on at the call
  /// (bf16 sampling, tessera/nn/inference_precision.h), float32 otherwise.
  KVCache make_kv_cache(int64_t batch, int64_t capacity = 0,
                        std::optional<at::ScalarType> dtype = std::nullopt) const;

  // --- size and cost ---
  int64_t num_parameters() const;  ///< trainable parameters (buffers excluded)
  /// Forward FLOPs of one token that attends to `attended_keys` keys: 2 per multiply-add of every
  /// per-token matrix product (input projection, qkv, proj, MLP) plus 4·width·attended_keys per
  /// layer for the attention itself. Per-sample condition work (AdaLN projections) is excluded.
  double forward_flops_per_token(double attended_keys) const;
  /// Forward FLOPs of one sample under `mask` (its exact visible (q, k) count), AdaLN included.
  double forward_flops(const BlockMask& mask) const;
  /// "backbone: 12 blocks, width 768, 12 heads (head dim 64), 111.3M parameters, …"
  std::string summary() const;

  // --- persistence (see Note [Backbone parameter names]) ---
  std::vector<at::Tensor> parameters() const;  ///< Trainable parameters.
  /// Parameters and buffers by name.
  std::map<std::string, at::Tensor> state_dict() const;
  /// Copies tensors in by name; strict by default. VAR's derived buffers are always ignored.
  StateDictLoadReport load_state_dict(const std::map<std::string, at::Tensor>& tensors,
                                      const StateDictLoadOptions& options = {});
  /// safetensors with the config as JSON in the metadata ("tessera.backbone_config").
  void save(const std::filesystem::path& path) const;
  StateDictLoadReport load(const std::filesystem::path& path,
                           const StateDictLoadOptions& options = {});  ///< Reads save()'s file.
  /// A backbone built from the config in a file written by save(), then loaded strictly.
  static Backbone from_file(const std::filesystem::path& path);

  /// LlamaGen's GPT state-dict names → Backbone's (tok_embeddings → word_embed, layers.i.attention
  /// .wqkv → blocks.i.attn.mat_qkv, …); for StateDictLoadOptions::renames, with ignore_prefixes
  /// {"output.", "freqs_cis"}.
  static std::vector<std::pair<std::string, std::string>> llamagen_key_renames();

  void set_training(bool training);  ///< Training mode (dropouts, drop path) on or off.
  bool is_training() const;  ///< Whether in training mode.
  void to(at::Device device);  ///< Moves parameters and buffers to `device`.
  at::Device device() const;  ///< Where the parameters are.

  /// The root module (its named_parameters() and named_buffers() are state_dict()'s keys), for a
  /// pipeline that registers the backbone as a submodule.
  std::shared_ptr<torch::nn::Module> module() const;

 private:
  BackboneConfig config_;
  TokenLayout layout_;
  std::shared_ptr<nn_detail::BackboneNet> net_;
};  ///< The transformer every schedule drives, over tokens or vectors, under a BlockMask.

/// Checkpoint keys that VAR derives from its layout and Backbone recomputes.
const std::vector<std::string>& var_derived_buffer_keys();

}  // namespace tessera
