#pragma once
// Tokens: what a tokenizer's encode() returns and decode() takes, scale by scale.
//
// A tokenizer turns images into one grid of tokens per scale (a single-scale tokenizer has one
// scale; VAR's multi-scale VQ has one per entry of patch_nums). Each grid is stored flattened in
// raster order, row by row:
//   discrete tokens   (VQ):           int64   [B, h*w]     codebook ids
//   continuous tokens (KL-VAE, patch): float32 [B, h*w, C]  one vector per position
// Concatenating the scales gives the sequence a backbone sees; its TokenLayout has one segment per
// scale.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "tessera/attention/token_layout.h"

namespace tessera {

/// The size of one scale's token grid.
struct TokenGridSize {
  int64_t height = 0;  ///< rows
  int64_t width = 0;  ///< columns

  int64_t count() const { return height * width; }  ///< height · width.
  bool operator==(const TokenGridSize&) const = default;  ///< Same height and width.
};

struct Tokens {
  /// One tensor per scale, coarse to fine: int64 [B, h*w] ids or float [B, h*w, C] vectors.
  std::vector<at::Tensor> scales{};
  /// The grid of each scale, in the same order.
  std::vector<TokenGridSize> grids{};

  int64_t num_scales() const { return static_cast<int64_t>(scales.size()); }  ///< Number of scales.
  int64_t batch_size() const;  ///< B, the first dimension of every scale.
  /// True for codebook ids (integer tensors), false for vectors.
  bool discrete() const;
  /// Total tokens per image: the sum of the grids' counts.
  int64_t length() const;
  /// One segment per scale.
  TokenLayout layout() const;
  /// All scales along the sequence dimension: [B, L] ids or [B, L, C] vectors.
  at::Tensor concatenated() const;

  /// Checks the invariants (as many grids as scales, every scale [B, h*w] or [B, h*w, C] with the
  /// same B, the same kind throughout); throws tessera::Error naming the first violation.
  void validate() const;
};  ///< A batch of tokens: one tensor per scale (one scale for most tokenizers).

/// Splits a concatenated [B, L] or [B, L, C] sequence back into scales of the given grids.
Tokens split_tokens(const at::Tensor& sequence, const std::vector<TokenGridSize>& grids);

}  // namespace tessera
