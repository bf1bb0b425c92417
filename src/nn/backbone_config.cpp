#include "tessera/nn/backbone_config.h"

#include <algorithm>

#include <cmath>
#include <numeric>

#include "tessera/core/error.h"

namespace tessera {

int64_t BackboneConfig::max_length() const {
  return std::accumulate(segments.begin(), segments.end(), int64_t{0});
}

double BackboneConfig::resolved_softmax_scale() const {
  if (softmax_scale) return *softmax_scale;
  return qk_l2_norm ? 1.0 : 1.0 / std::sqrt(static_cast<double>(head_dim()));
}

// Note [Backbone size limits]
// A config is untrusted input (a file from anywhere), and the sizes below enter products
// (parameter counts, embedding tables, position tables) in int64. Each is bounded far above any
// real model (VAR-d30 has width 1920, depth 30, 680 positions; LlamaGen's vocabulary is 16384) and
// low enough that no product of them can overflow; fuzz/fuzz_config found the overflow before
// these bounds existed.
constexpr int64_t kMaxWidth = int64_t{1} << 16;
constexpr int64_t kMaxDepth = int64_t{1} << 12;
constexpr int64_t kMaxTableRows = int64_t{1} << 24;  // vocabulary, classes, positions
constexpr int64_t kMaxChannels = int64_t{1} << 20;   // input channels, MLP hidden width

void BackboneConfig::validate() const {
  TESSERA_CHECK(width >= 1 && depth >= 1 && num_heads >= 1,
                "width, depth and num_heads must be >= 1; got {}, {}, {}", width, depth, num_heads);
  TESSERA_CHECK(width <= kMaxWidth && depth <= kMaxDepth,
                "width must be at most {} and depth at most {} (Note [Backbone size limits]); got "
                "{} and {}",
                kMaxWidth, kMaxDepth, width, depth);
  TESSERA_CHECK(vocab_size <= kMaxTableRows && num_classes <= kMaxTableRows,
                "vocab_size and num_classes must be at most {}; got {} and {}", kMaxTableRows,
                vocab_size, num_classes);
  TESSERA_CHECK(input_channels <= kMaxChannels && mlp_hidden <= kMaxChannels,
                "input_channels and mlp_hidden must be at most {}; got {} and {}", kMaxChannels,
                input_channels, mlp_hidden);
  TESSERA_CHECK(segments.size() <= static_cast<size_t>(kMaxTableRows),
                "at most {} segments, got {}", kMaxTableRows, segments.size());
  int64_t length = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    TESSERA_CHECK(segments[s] <= kMaxTableRows - length,
                  "the segments add up to more than {} positions (segments[{}] = {})",
                  kMaxTableRows, s, segments[s]);
    length += std::max<int64_t>(segments[s], 0);
  }
  TESSERA_CHECK(width % num_heads == 0, "width {} is not divisible by num_heads {}", width,
                num_heads);
  TESSERA_CHECK(!segments.empty(),
                "segments is empty; expected the lengths of the sequence's "
                "segments (e.g. [1, 255])");
  for (size_t s = 0; s < segments.size(); ++s) {
    TESSERA_CHECK(segments[s] >= 1, "segments[{}] is {}; every segment needs >= 1 token", s,
                  segments[s]);
  }
  if (input == InputKind::token_ids) {
    TESSERA_CHECK(vocab_size >= 1, "vocab_size must be >= 1 for token-id inputs, got {}",
                  vocab_size);
  } else {
    TESSERA_CHECK(input_channels >= 1, "input_channels must be >= 1 for vector inputs, got {}",
                  input_channels);
  }
  TESSERA_CHECK(norm_eps > 0, "norm_eps must be > 0, got {}", norm_eps);
  TESSERA_CHECK(mlp_hidden >= 0, "mlp_hidden must be >= 0 (0: 4·width), got {}", mlp_hidden);
  TESSERA_CHECK(qk_scale_init > 0 && qk_scale_max >= qk_scale_init,
                "qk_scale_init must be > 0 and qk_scale_max >= qk_scale_init; got {} and {}",
                qk_scale_init, qk_scale_max);
  TESSERA_CHECK(!softmax_scale || (std::isfinite(*softmax_scale) && *softmax_scale > 0),
                "softmax_scale must be finite and > 0, got {}", softmax_scale.value_or(0));
  TESSERA_CHECK(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got {}", dropout);
  TESSERA_CHECK(embedding_dropout >= 0 && embedding_dropout < 1,
                "embedding_dropout must be in [0, 1), got {}", embedding_dropout);
  TESSERA_CHECK(drop_path >= 0 && drop_path < 1, "drop_path must be in [0, 1), got {}", drop_path);
  TESSERA_CHECK(branch_blocks >= 0 && branch_blocks <= depth,
                "branch_blocks must be in [0, depth = {}], got {}", depth, branch_blocks);

  TESSERA_CHECK(num_classes >= 0, "num_classes must be >= 0, got {}", num_classes);
  const bool conditioned = adaln != AdaLnKind::none || condition_tokens > 0 ||
                           final_norm == FinalNorm::adaln || condition_dropout > 0;
  TESSERA_CHECK(!conditioned || num_classes >= 1,
                "AdaLN, condition tokens, an AdaLN final norm and condition dropout need a class "
                "condition; set num_classes >= 1 (got {})",
                num_classes);
  TESSERA_CHECK(condition_tokens >= 0 && condition_tokens < max_length(),
                "condition_tokens must be in [0, {}) (the sequence length), got {}", max_length(),
                condition_tokens);
  TESSERA_CHECK(!condition_token_embedding || condition_tokens >= 1,
                "condition_token_embedding (pos_start) needs condition_tokens >= 1");
  TESSERA_CHECK(condition_dropout >= 0 && condition_dropout < 1,
                "condition_dropout must be in [0, 1), got {}", condition_dropout);

  TESSERA_CHECK(absolute_positions != AbsolutePositions::sinusoidal || width % 2 == 0,
                "sinusoidal positions need an even width, got {}", width);
  if (rope != RopeKind::none) {
    TESSERA_CHECK(rope_base > 0, "rope_base must be > 0, got {}", rope_base);
    const int64_t multiple = rope == RopeKind::rope_2d ? 4 : 2;
    TESSERA_CHECK(head_dim() % multiple == 0,
                  "{} needs a head dim divisible by {}, got {} (width {} / {} heads)",
                  rope == RopeKind::rope_2d ? "2D rope" : "1D rope", multiple, head_dim(), width,
                  num_heads);
  }
  if (rope == RopeKind::rope_2d) {
    TESSERA_CHECK(rope_grid >= 1 && rope_grid <= kMaxTableRows,
                  "2D rope: rope_grid must be in [1, {}], got {}", kMaxTableRows, rope_grid);
    TESSERA_CHECK(rope_grid * rope_grid >= max_length() - condition_tokens,
                  "2D rope: the {}x{} grid holds {} tokens but the sequence has {} after its {} "
                  "condition tokens",
                  rope_grid, rope_grid, rope_grid * rope_grid, max_length() - condition_tokens,
                  condition_tokens);
  }
  TESSERA_CHECK(init_std != 0, "init_std must be non-zero (< 0 picks sqrt(1/(3·width)))");
}

// --- presets ------------------------------------------------------------------------------------

int64_t BackboneConfig::parameter_count() const {
  const int64_t c = width, h = resolved_mlp_hidden();
  auto linear = [](int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); };
  auto norm_parameters = [&](bool affine) {
    return affine ? (norm == NormKind::layer_norm ? 2 * c : c) : int64_t{0};
  };
  int64_t total = input == InputKind::token_ids ? vocab_size * c
                                                : linear(input_channels, c, input_bias);
  if (input_norm) total += norm_parameters(true);
  if (num_classes > 0) total += (num_classes + 1) * c;
  if (condition_token_embedding) total += condition_tokens * c;
  if (absolute_positions == AbsolutePositions::learned) total += max_length() * c;
  if (level_embedding) total += static_cast<int64_t>(segments.size()) * c;
  if (adaln == AdaLnKind::shared) total += linear(c, 6 * c, true);
  int64_t block = 2 * norm_parameters(norm_affine);
  block += linear(c, 3 * c, qkv_bias == QkvBias::all);
  if (qkv_bias == QkvBias::q_and_v) block += 2 * c;
  if (qk_l2_norm) block += num_heads;
  block += linear(c, c, proj_bias);
  block += mlp == MlpKind::swiglu ? 2 * linear(c, h, mlp_bias) + linear(h, c, mlp_bias)
                                  : linear(c, h, mlp_bias) + linear(h, c, mlp_bias);
  if (adaln == AdaLnKind::per_block) block += linear(c, 6 * c, true);
  if (adaln == AdaLnKind::shared) block += 6 * c;  // ada_gss
  total += (depth + branch_blocks) * block;
  if (final_norm == FinalNorm::norm) total += norm_parameters(true);
  if (final_norm == FinalNorm::adaln) total += linear(c, 2 * c, true);
  if (output_positions) total += segments.back() * c;
  return total;
}

BackboneConfig var_style_config(int64_t width, int64_t depth, int64_t num_heads,
                                const std::vector<int64_t>& patch_nums, int64_t vae_channels,
                                int64_t num_classes, bool shared_adaln) {
  BackboneConfig c;
  c.width = width;
  c.depth = depth;
  c.num_heads = num_heads;
  c.segments.clear();
  for (int64_t pn : patch_nums) c.segments.push_back(pn * pn);
  c.input = InputKind::vectors;
  c.input_channels = vae_channels;
  c.norm = NormKind::layer_norm;
  c.norm_affine = false;
  c.norm_eps = 1e-6;
  c.mlp = MlpKind::gelu_tanh;
  c.qkv_bias = QkvBias::q_and_v;
  c.qk_l2_norm = true;
  c.qk_scale_init = 4.0;
  c.qk_scale_max = 100.0;
  c.num_classes = num_classes;
  c.adaln = shared_adaln ? AdaLnKind::shared : AdaLnKind::per_block;
  c.condition_tokens = c.segments.empty() ? 0 : c.segments.front();
  c.condition_token_embedding = true;
  c.condition_dropout = 0.1;
  c.absolute_positions = AbsolutePositions::learned;
  c.level_embedding = true;
  c.final_norm = FinalNorm::none;
  c.init_std = -1;  // VAR's automatic sqrt(1/(3C))
  return c;
}

BackboneConfig llamagen_style_config(int64_t width, int64_t depth, int64_t num_heads, int64_t grid,
                                     int64_t vocab_size, int64_t num_classes) {
  BackboneConfig c;
  c.width = width;
  c.depth = depth;
  c.num_heads = num_heads;
  c.segments = {1, grid * grid - 1};
  c.input = InputKind::token_ids;
  c.vocab_size = vocab_size;
  c.norm = NormKind::rms_norm;
  c.norm_affine = true;
  c.norm_eps = 1e-5;
  c.mlp = MlpKind::swiglu;
  // LlamaGen's FeedForward: find_multiple(int(2 * 4 * dim / 3), 256).
  const int64_t hidden = 2 * 4 * width / 3;
  c.mlp_hidden = (hidden + 255) / 256 * 256;
  c.mlp_bias = false;
  c.qkv_bias = QkvBias::none;
  c.proj_bias = false;
  c.num_classes = num_classes;
  c.condition_tokens = 1;
  c.condition_dropout = 0.1;
  c.rope = RopeKind::rope_2d;
  c.rope_grid = grid;
  c.rope_prefix = PrefixRotation::zero;
  c.final_norm = FinalNorm::norm;
  c.dropout = 0.1;
  c.embedding_dropout = 0.1;
  c.init_std = 0.02;
  return c;
}

BackboneConfig maskgit_style_config(int64_t width, int64_t depth, int64_t num_heads,
                                    int64_t num_tokens, int64_t vocab_size, int64_t num_classes) {
  BackboneConfig c;
  c.width = width;
  c.depth = depth;
  c.num_heads = num_heads;
  if (num_classes > 0) {
    c.segments = {1, num_tokens};
    c.condition_tokens = 1;
    c.condition_dropout = 0.1;
  } else {
    c.segments = {num_tokens};
  }
  c.input = InputKind::token_ids;
  c.vocab_size = vocab_size;
  c.norm = NormKind::layer_norm;
  c.norm_affine = true;
  c.norm_eps = 1e-12;
  c.mlp = MlpKind::gelu;
  c.qkv_bias = QkvBias::all;
  c.num_classes = num_classes;
  c.absolute_positions = AbsolutePositions::learned;
  c.final_norm = FinalNorm::norm;
  c.dropout = 0.1;
  c.init_std = 0.02;
  return c;
}

BackboneConfig mar_style_config(int64_t width, int64_t depth, int64_t num_heads, int64_t num_tokens,
                                int64_t token_channels, int64_t num_classes, int64_t buffer_size) {
  BackboneConfig c;
  c.width = width;
  c.depth = depth;
  c.num_heads = num_heads;
  if (buffer_size > 0) {
    c.segments = {buffer_size, num_tokens};
  } else {
    c.segments = {num_tokens};
  }
  c.input = InputKind::vectors;
  c.input_channels = token_channels;
  c.norm = NormKind::layer_norm;
  c.norm_affine = true;
  c.norm_eps = 1e-6;
  c.mlp = MlpKind::gelu;
  c.qkv_bias = QkvBias::all;
  c.num_classes = num_classes;
  c.condition_tokens = buffer_size;
  c.condition_dropout = 0.1;
  c.absolute_positions = AbsolutePositions::learned;
  c.final_norm = FinalNorm::norm;
  c.init_std = 0.02;
  return c;
}

BackboneConfig mar_decoder_config(int64_t width, int64_t depth, int64_t num_heads,
                                  int64_t num_tokens, int64_t encoder_width, int64_t buffer_size) {
  BackboneConfig c = mar_style_config(width, depth, num_heads, num_tokens, encoder_width + 1,
                                      /*num_classes=*/0, buffer_size);
  c.condition_tokens = 0;  // buffer rows carry the encoder's outputs, not a class embedding
  c.condition_dropout = 0.0;
  return c;
}

}  // namespace tessera
