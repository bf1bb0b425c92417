#pragma once
// What masked schedules share (MaskGIT, MAR, MAGNeT, HMAR's refinement): the masking curve, how
// many positions stay masked after a step, and which ones (the least confident, per sample).
//
// Note [Masked decoding counts]
// With N tokens, T steps and a curve γ (the fraction still masked), step s (0-based) of MaskGIT and
// MAR keeps
//     masked_after(s) = floor(N · γ((s + 1)/T)), clamped to [1, unknown_before(s) − 1]
// positions masked (MaskGIT's `mask_len = max(1, min(unknown − 1, floor(N·ratio)))`, MAR's
// `mask_len` the same with N = seq_len), except the last step (s = T − 1), which commits every
// remaining position (MAR predicts `mask` entirely at its last step; MaskGIT's final sample is
// the last step's full draw). The count depends only on (N, T, s) and the previous count, never on
// a sample's draws, so every sample of a batch commits the same number of positions per step.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"

namespace tessera {

/// γ(r) for r in [0, 1]: the fraction of tokens still masked at progress r (γ(0) = 1, γ(1) = 0).
enum class MaskingCurve {
  cosine,  ///< cos(π/2 · r)                 MaskGIT, MAR
  arccos,  ///< arccos(r) / (π/2)            Muse / Meissonic
  linear,  ///< 1 − r
  square,  ///< 1 − r²                       MaskGIT's "square"
  cubic,   ///< 1 − r³
  sqrt,    ///< 1 − √r
};

template <>
struct ConfigEnum<MaskingCurve> {  /// Each value with its name.
  static constexpr std::pair<MaskingCurve, const char*> values[] = {
      {MaskingCurve::cosine, "cosine"}, {MaskingCurve::arccos, "arccos"},
      {MaskingCurve::linear, "linear"}, {MaskingCurve::square, "square"},
      {MaskingCurve::cubic, "cubic"},   {MaskingCurve::sqrt, "sqrt"}};
};  ///< The names of MaskingCurve values in JSON configs.

/// γ(r); throws tessera::Error for r outside [0, 1].
double masked_fraction(MaskingCurve curve, double progress);

/// Positions still masked after step `step` of `num_steps`, when `masked_before` of `num_tokens`
/// were masked before it. See Note [Masked decoding counts]. Throws tessera::Error for counts or
/// steps out of range.
int64_t masked_after_step(MaskingCurve curve, int64_t num_tokens, int64_t step, int64_t num_steps,
                          int64_t masked_before);

/// Per row, the `count` positions of lowest `confidence` [B, N] among those where `candidates`
/// [B, N] (bool) is true: a bool [B, N] mask. Ties break towards the lower position (a stable
/// sort), so the choice is deterministic. Every row must have at least `count` candidates.
at::Tensor lowest_confidence(const at::Tensor& confidence, const at::Tensor& candidates,
                             int64_t count);

}  // namespace tessera
