#pragma once
// Fixed position encodings: rotary embeddings (1D and LlamaGen's 2D) and sinusoidal embeddings.
//
// Note [Rotary conventions]
// Rotary embeddings rotate consecutive pairs (x[2i], x[2i+1]) of a head's vector by an angle
// θ_i(position): out[2i] = x[2i]·cos θ − x[2i+1]·sin θ, out[2i+1] = x[2i+1]·cos θ + x[2i]·sin θ
// (the interleaved pairing of gpt-fast and LlamaGen, not the split-halves pairing of GPT-NeoX).
//   1D: θ_i = t · base^(−2i/D), i < D/2, where t is the token's index after the prefix.
//   2D (LlamaGen's precompute_freqs_cis_2d): the D/2 pairs are split in two halves. With
//       f_j = base^(−2j/(D/2)), j < D/4, pair j rotates by row·f_j and pair D/4 + j by col·f_j,
//       where (row, col) = (t / grid, t % grid) is the token's cell in a row-major grid.
// Prefix tokens (condition tokens: LlamaGen's class token) are not on the grid. LlamaGen gives
// them cos = sin = 0, which is not the identity rotation: it maps their queries and keys to zero,
// so the class token's key scores 0 against every query. `PrefixRotation::zero` reproduces that
// (its checkpoints were trained with it); `identity` leaves prefix vectors unrotated.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"

namespace tessera {
/// Rotary position embeddings: none, over the sequence, or over a 2D grid.
enum class RopeKind { none, rope_1d, rope_2d };

template <>
struct ConfigEnum<RopeKind> {  /// Each value with its name.
  static constexpr std::pair<RopeKind, const char*> values[] = {
      {RopeKind::none, "none"}, {RopeKind::rope_1d, "rope_1d"}, {RopeKind::rope_2d, "rope_2d"}};
};  ///< The names of RopeKind values in JSON configs.
/// How rotary tables treat prefix (condition) positions.
enum class PrefixRotation { zero, identity };

template <>
struct ConfigEnum<PrefixRotation> {  /// Each value with its name.
  static constexpr std::pair<PrefixRotation, const char*> values[] = {
      {PrefixRotation::zero, "zero"}, {PrefixRotation::identity, "identity"}};
};  ///< The names of PrefixRotation values in JSON configs.

/// Everything a rotary table depends on besides the positions.
struct RopeSpec {
  RopeKind kind = RopeKind::none;  ///< none, 1D or 2D
  int64_t head_dim = 64;  ///< even for 1D, a multiple of 4 for 2D
  double base = 10000.0;  ///< frequency base
  int64_t prefix = 0;  ///< positions [0, prefix) are prefix tokens
  int64_t grid = 0;    ///< 2D: the grid's side; token t sits at (t / grid, t % grid)
  PrefixRotation prefix_rotation = PrefixRotation::zero;  ///< prefix positions' rotation
};

/// cos and sin of every pair's angle: float32 [positions..., head_dim / 2] each.
struct RotaryTable {
  at::Tensor cos;  ///< cosines
  at::Tensor sin;  ///< sines
};

/// The rotation of each position (int64 tensor of any shape; sequence positions, prefix included)
/// under `spec`; see Note [Rotary conventions]. Throws tessera::Error for kind none, an odd head
/// dim (or one not divisible by 4 for 2D), or a 2D position beyond the grid.
RotaryTable rotary_table(const RopeSpec& spec, const at::Tensor& positions);

/// Rotates x [..., L, D] by the table (cos and sin broadcastable to [..., L, D/2]). Computes in
/// float32 and returns x's dtype.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTable& table);

/// Sinusoidal embeddings of positions (int64, any shape) → float32 [positions..., width], in MAE's
/// 1D convention: [sin(p·ω_0), …, sin(p·ω_{W/2−1}), cos(p·ω_0), …] with ω_i = base^(−i/(W/2)).
/// `width` must be even.
at::Tensor sinusoidal_embedding(const at::Tensor& positions, int64_t width, double base = 10000.0);

}  // namespace tessera
