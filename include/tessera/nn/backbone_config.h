#pragma once
// The backbone's configuration (what a checkpoint records), JSON-mappable, and presets for the
// architecture styles of the reference implementations.
//
// The sequence the backbone runs over is laid out by `segments` (a TokenLayout): the condition
// tokens, if any, come first, then the token positions. Its total is the longest sequence.
//   VAR (patch_nums 1,2,…,16): segments {1, 4, 9, …, 256}; position 0 holds the class embedding
//     plus pos_start (VAR's start-of-sequence), the rest hold word_embed(f_hat features).
//   LlamaGen (16x16 grid): segments {1, 255}; position 0 is the class token, positions 1..255
//     hold tokens 0..254 (the last token is never an input).
//   MAR (buffer 64, 16x16): segments {64, 256}; the 64 buffer positions hold the class embedding.
//   MaskGIT (16x16): segments {1, 256} with a class token, or {256} unconditional.

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/nn/position_encoding.h"

namespace tessera {

/// What the backbone's inputs are.
enum class InputKind {
  token_ids,  ///< int64 [B, n] → Embedding(vocab_size, width) (LlamaGen, MaskGIT)
  vectors,    ///< float [B, n, input_channels] → Linear(input_channels, width) (VAR, MAR)
};
/// The blocks' normalisation.
enum class NormKind { layer_norm, rms_norm };
/// The blocks' MLP.
enum class MlpKind {
  gelu_tanh,  ///< fc2(GELU_tanh(fc1 x)) (VAR)
  gelu,       ///< fc2(GELU(fc1 x)) (timm ViT: MAR, MaskGIT)
  swiglu,     ///< w2(SiLU(w1 x) · w3 x) (LlamaGen)
};
/// Biases of the q, k, v projection.
enum class QkvBias {
  none,     ///< LlamaGen
  q_and_v,  ///< learned q and v biases and a zero k bias (VAR, BEiT)
  all,      ///< one bias on the fused projection (timm ViT)
};

/// AdaLN modulation (DiT / VAR): six vectors per block from the condition c,
///   (γ1, γ2, s1, s2, b1, b2) in VAR's order;
///   x += γ1 · attn(norm(x)·(1 + s1) + b1);  x += γ2 · mlp(norm(x)·(1 + s2) + b2).
enum class AdaLnKind {
  none,
  per_block,  ///< blocks.i.ada_lin = SiLU → Linear(width, 6·width)
  shared,     ///< shared_ada_lin = SiLU → Linear(width, 6·width) once, plus a learned
              ///< blocks.i.ada_gss [1, 1, 6, width] per block (VAR's shared_aln)
};
/// Absolute position embeddings added to the inputs.
enum class AbsolutePositions {
  none,
  learned,     ///< pos_1LC [1, max_length, width] (VAR, MAR, MaskGIT)
  sinusoidal,  ///< fixed, see sinusoidal_embedding()
};
/// What the last block's output goes through.
enum class FinalNorm {
  none,   ///< the hidden states of the last block (VAR: the head owns its AdaLN)
  norm,   ///< `norm`: the configured norm (LlamaGen's RMSNorm, ViT's LayerNorm), with affine
  adaln,  ///< `head_nm`: LayerNorm without affine ·(1 + s) + b, (s, b) = ada_lin(c) (VAR's
          ///< AdaLNBeforeHead, for a head that does not do it itself)
};

template <>
struct ConfigEnum<InputKind> {  /// Each value with its name.
  static constexpr std::pair<InputKind, const char*> values[] = {
      {InputKind::token_ids, "token_ids"}, {InputKind::vectors, "vectors"}};
};  ///< The names of InputKind values in JSON configs.
template <>
struct ConfigEnum<NormKind> {  /// Each value with its name.
  static constexpr std::pair<NormKind, const char*> values[] = {
      {NormKind::layer_norm, "layer_norm"}, {NormKind::rms_norm, "rms_norm"}};
};  ///< The names of NormKind values in JSON configs.
template <>
struct ConfigEnum<MlpKind> {  /// Each value with its name.
  static constexpr std::pair<MlpKind, const char*> values[] = {
      {MlpKind::gelu_tanh, "gelu_tanh"}, {MlpKind::gelu, "gelu"}, {MlpKind::swiglu, "swiglu"}};
};  ///< The names of MlpKind values in JSON configs.
template <>
struct ConfigEnum<QkvBias> {  /// Each value with its name.
  static constexpr std::pair<QkvBias, const char*> values[] = {
      {QkvBias::none, "none"}, {QkvBias::q_and_v, "q_and_v"}, {QkvBias::all, "all"}};
};  ///< The names of QkvBias values in JSON configs.
template <>
struct ConfigEnum<AdaLnKind> {  /// Each value with its name.
  static constexpr std::pair<AdaLnKind, const char*> values[] = {
      {AdaLnKind::none, "none"},
      {AdaLnKind::per_block, "per_block"},
      {AdaLnKind::shared, "shared"}};
};  ///< The names of AdaLnKind values in JSON configs.
template <>
struct ConfigEnum<AbsolutePositions> {  /// Each value with its name.
  static constexpr std::pair<AbsolutePositions, const char*> values[] = {
      {AbsolutePositions::none, "none"},
      {AbsolutePositions::learned, "learned"},
      {AbsolutePositions::sinusoidal, "sinusoidal"}};
};  ///< The names of AbsolutePositions values in JSON configs.
template <>
struct ConfigEnum<FinalNorm> {  /// Each value with its name.
  static constexpr std::pair<FinalNorm, const char*> values[] = {
      {FinalNorm::none, "none"}, {FinalNorm::norm, "norm"}, {FinalNorm::adaln, "adaln"}};
};  ///< The names of FinalNorm values in JSON configs.

struct BackboneConfig {
  // --- shape ---
  int64_t width = 256;  ///< hidden width
  int64_t depth = 4;  ///< number of blocks
  int64_t num_heads = 4;  ///< attention heads per block
  /// Segment lengths of the whole sequence, condition tokens first (see the top of this file).
  std::vector<int64_t> segments = {1, 255};

  // --- input ---
  InputKind input = InputKind::token_ids;  ///< ids or vectors
  int64_t vocab_size = 1024;   ///< token_ids: ids in [0, vocab_size), special ids included
  int64_t input_channels = 0;  ///< vectors
  bool input_bias = true;      ///< vectors: the input projection's bias
  /// `input_norm`: a norm of the configured kind, with affine, on the embedded inputs after the
  /// position terms are added (MAR's z_proj_ln on the encoder's inputs).
  bool input_norm = false;

  // --- blocks ---
  NormKind norm = NormKind::layer_norm;  ///< LayerNorm or RMSNorm
  bool norm_affine = true;  ///< VAR's AdaLN blocks: false
  double norm_eps = 1e-6;  ///< the norms' epsilon
  MlpKind mlp = MlpKind::gelu_tanh;  ///< the MLP's form
  int64_t mlp_hidden = 0;  ///< 0: 4·width
  bool mlp_bias = true;  ///< the MLP's biases
  QkvBias qkv_bias = QkvBias::none;  ///< the qkv projection's biases
  bool proj_bias = true;  ///< the attention output projection's bias
  /// VAR's attn_l2_norm: q and k L2-normalised per head, q multiplied by exp(min(λ_h, log(max)))
  /// with a learned λ_h per head initialised to log(init) (blocks.i.attn.scale_mul_1H11).
  bool qk_l2_norm = false;
  double qk_scale_init = 4.0;  ///< see qk_l2_norm
  double qk_scale_max = 100.0;  ///< see qk_l2_norm
  /// Softmax scale; default 1 with qk_l2_norm (VAR), 1/sqrt(head_dim) otherwise.
  std::optional<double> softmax_scale{};
  double dropout = 0.0;            ///< on each residual branch's output (attention proj, MLP)
  double embedding_dropout = 0.0;  ///< on the summed input embeddings (LlamaGen's token dropout)
  double drop_path = 0.0;  ///< stochastic depth: block i drops with rate drop_path·i/(depth−1)
  /// A second set of the last `branch_blocks` blocks ("branch_blocks.<j>"), run instead of blocks
  /// depth − branch_blocks … depth − 1 when a forward call asks for the branch
  /// (BackboneForwardOptions::branch): HMAR's split of one network into shared base blocks and two
  /// 8-block tails, the next-scale tail (the ordinary blocks) and the masked-prediction tail (the
  /// branch). 0: no branch.
  int64_t branch_blocks = 0;

  // --- conditioning ---
  int64_t num_classes = 0;  ///< 0: unconditional; otherwise class_emb has a null class num_classes
  AdaLnKind adaln = AdaLnKind::none;  ///< AdaLN modulation from the class
  int64_t condition_tokens = 0;            ///< leading positions that hold the class embedding
  bool condition_token_embedding = false;  ///< pos_start [1, condition_tokens, width] added (VAR)
  double condition_dropout = 0.0;          ///< training: labels replaced by the null class

  // --- positions ---
  AbsolutePositions absolute_positions = AbsolutePositions::none;  ///< absolute position embeddings
  bool level_embedding = false;  ///< lvl_embed: one learned vector per segment (VAR)
  RopeKind rope = RopeKind::none;  ///< rotary embeddings
  double rope_base = 10000.0;  ///< rotary frequency base
  int64_t rope_grid = 0;                              ///< rope_2d: the token grid's side
  PrefixRotation rope_prefix = PrefixRotation::zero;  ///< see Note [Rotary conventions]

  // --- output ---
  FinalNorm final_norm = FinalNorm::none;  ///< what the last block's output goes through
  /// `pos_out` [1, last segment's length, width]: learned positions added after the final norm to
  /// the rows of the last segment (MAR's diffusion_pos_embed_learned on the decoder's token rows;
  /// the rows of earlier segments get none).
  bool output_positions = false;

  // --- initialisation (a checkpoint overrides it) ---
  double init_std = 0.02;  ///< < 0: sqrt(1 / (3·width)) (VAR's automatic rule)
  /// Derived sizes: width / num_heads, the sum of segments, mlp_hidden (0: 4·width). @{
  int64_t head_dim() const { return width / num_heads; }
  int64_t max_length() const;
  int64_t resolved_mlp_hidden() const { return mlp_hidden > 0 ? mlp_hidden : 4 * width; }
  /// The trainable parameters a Backbone of this config has (Backbone::num_parameters()), counted
  /// from the config without building it: the size of VAR-d30 (2.0 B) without 8 GB of memory.
  int64_t parameter_count() const;
  double resolved_softmax_scale() const;  ///< softmax_scale, or its default.
  /** @} */
  template <class Visitor>
  void visit(Visitor& v) {
    v("width", width);
    v("depth", depth);
    v("num_heads", num_heads);
    v("segments", segments);
    v("input", input);
    v("vocab_size", vocab_size);
    v("input_channels", input_channels);
    v("input_bias", input_bias);
    v("input_norm", input_norm);
    v("norm", norm);
    v("norm_affine", norm_affine);
    v("norm_eps", norm_eps);
    v("mlp", mlp);
    v("mlp_hidden", mlp_hidden);
    v("mlp_bias", mlp_bias);
    v("qkv_bias", qkv_bias);
    v("proj_bias", proj_bias);
    v("qk_l2_norm", qk_l2_norm);
    v("qk_scale_init", qk_scale_init);
    v("qk_scale_max", qk_scale_max);
    v("softmax_scale", softmax_scale);
    v("dropout", dropout);
    v("embedding_dropout", embedding_dropout);
    v("drop_path", drop_path);
    v("branch_blocks", branch_blocks);
    v("num_classes", num_classes);
    v("adaln", adaln);
    v("condition_tokens", condition_tokens);
    v("condition_token_embedding", condition_token_embedding);
    v("condition_dropout", condition_dropout);
    v("absolute_positions", absolute_positions);
    v("level_embedding", level_embedding);
    v("rope", rope);
    v("rope_base", rope_base);
    v("rope_grid", rope_grid);
    v("rope_prefix", rope_prefix);
    v("final_norm", final_norm);
    v("output_positions", output_positions);
    v("init_std", init_std);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  /// Throws tessera::Error naming the first inconsistent field.
  void validate() const;
};  ///< A Backbone's architecture (what a checkpoint records); the file's top comment has layouts.

// --- presets: the architecture styles of the reference implementations --------------------------

/// VAR / HMAR (FoundationVision/VAR): AdaLN blocks (per block, or shared), LayerNorm without affine
/// eps 1e-6, GELU-tanh MLP ×4, q/v biases with a zero k bias, q/k L2-norm with a learned per-head
/// scale (init 4, max 100) and softmax scale 1, class embedding + pos_start at the first scale,
/// learned absolute positions plus level embeddings, no final norm (the head's AdaLN takes the
/// condition). VAR-d{depth} has width 64·depth and depth heads.
BackboneConfig var_style_config(int64_t width, int64_t depth, int64_t num_heads,
                                const std::vector<int64_t>& patch_nums, int64_t vae_channels,
                                int64_t num_classes, bool shared_adaln = false);

/// LlamaGen (c2i): a class token prefix, RMSNorm eps 1e-5, SwiGLU with LlamaGen's hidden size
/// (find_multiple(⌊2·4·width/3⌋, 256)), no biases, 2D RoPE over a grid×grid token map with a zero
/// rotation on the class token, a final RMSNorm; segments {1, grid² − 1}.
BackboneConfig llamagen_style_config(int64_t width, int64_t depth, int64_t num_heads, int64_t grid,
                                     int64_t vocab_size, int64_t num_classes);

/// MaskGIT-style bidirectional ViT over token ids (vocab_size includes the mask id): LayerNorm eps
/// 1e-12 with affine, GELU MLP ×4, biases everywhere, learned absolute positions, a class token
/// prefix when num_classes > 0, a final LayerNorm.
BackboneConfig maskgit_style_config(int64_t width, int64_t depth, int64_t num_heads,
                                    int64_t num_tokens, int64_t vocab_size, int64_t num_classes);

/// MAR-style bidirectional ViT over continuous token vectors: `buffer_size` leading buffer tokens
/// holding the class embedding, learned absolute positions over buffer and tokens, LayerNorm eps
/// 1e-6 with affine, GELU MLP ×4, qkv bias, a final LayerNorm.
BackboneConfig mar_style_config(int64_t width, int64_t depth, int64_t num_heads, int64_t num_tokens,
                                int64_t token_channels, int64_t num_classes,
                                int64_t buffer_size = 64);

/// The decoder of MAR's MAE split (models/mar.py's decoder_*): mar_style_config's blocks, norms and
/// learned positions over segments {buffer, num_tokens}, unconditional (the class enters through
/// the encoder's buffer), taking the encoder's outputs plus a mask indicator (encoder_width + 1
/// channels), so that its input projection is decoder_embed and its indicator column the mask
/// token. See Note [MAR encoder–decoder split] in tessera/schedule/mar_schedule.h.
BackboneConfig mar_decoder_config(int64_t width, int64_t depth, int64_t num_heads,
                                  int64_t num_tokens, int64_t encoder_width, int64_t buffer_size);

}  // namespace tessera
