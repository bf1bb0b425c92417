#pragma once
// Sampling one token per row from logits: the filtered, guided distribution, and draws from it.
//
// Note [Token distribution]
// For logits c (conditional) and u (unconditional, under guidance) of one row:
//   1. guided   g = u + w·(c − u)                       (g = c without guidance or when w = 1)
//   2. tempered g / temperature                        (LlamaGen; VAR has no temperature)
//   3. top-k    keep g_i >= the k-th largest g          (VAR: ties at the k-th all survive;
//                                                         LlamaGen's test is the same)
//   4. top-p    sort ascending, remove a token when the softmax mass of itself and every token
//               below it is <= 1 − p, never the top token (VAR's sample_with_top_k_top_p_).
//               Equivalently: keep a token when the mass ranked strictly above it is < p.
//               LlamaGen (Hugging Face's filter) keeps it when that mass is <= p: the two differ
//               only when a prefix of the sorted masses sums exactly to p.
//   5. p = softmax of the surviving logits (removed tokens have probability exactly 0).
// Steps 4 and 5 take the softmax after the earlier filters, as both references do. The ascending
// sort is stable, so among equal logits the higher index ranks above (VAR's sort is not stable:
// it leaves such ties unspecified).

#include <ATen/core/Tensor.h>

#include "tessera/core/rng.h"
#include "tessera/head/sampling_options.h"

namespace tessera {

/// The distribution of Note [Token distribution] for every row: float32 (or float64 for float64
/// logits) [N, V], rows summing to 1. `uncond_logits` is undefined without guidance. Throws
/// tessera::Error for temperature <= 0, top_k outside [0, V], top_p outside (0, 1], or shapes
/// that differ.
at::Tensor token_distribution(const at::Tensor& cond_logits, const at::Tensor& uncond_logits,
                              double guidance_weight, double temperature,
                              const DiscreteSamplingOptions& options);

struct TokenDraw {
  at::Tensor ids{};                ///< int64 [N]
  at::Tensor probabilities{};      ///< [N], probabilities[i] = distribution[i, ids[i]]
  at::Tensor log_probabilities{};  ///< [N], their logarithms
};  ///< Token ids drawn from a distribution, with their probabilities.

/// One draw per row of `distribution` [N, V] (rows sample-major, N a multiple of rngs.size()).
/// Inverse-CDF: one uniform per row; Gumbel-max: V Gumbels per row; either way sample b makes the
/// same draws whatever the batch. Zero-probability tokens are never chosen. With a shared stream
/// (SampleRngs::shared_stream) the draws are reference_multinomial over all rows in order, the
/// reference's torch.multinomial as the stream's PyTorch version makes it (Note [Reference
/// seeding] in core/rng.h); like it, the inverse CDF can return a leading zero-probability token
/// only when the uniform is exactly 0 (chance 2^-53).
TokenDraw draw_tokens(const at::Tensor& distribution, bool gumbel_max, SampleRngs& rngs);

}  // namespace tessera
