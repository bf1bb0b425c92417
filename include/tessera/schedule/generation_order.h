#pragma once
// Fixed orders over a token grid in which a one-token-per-step schedule (RasterSchedule) generates
// the grid's cells.
//
// Note [Generation orders]
// Cells are numbered in raster order, index = row·width + col. An order is a permutation of
// 0 .. h·w − 1: order[i] is the cell generated at step i.
//   raster:       0, 1, 2, …  (LlamaGen).
//   halton:       the 2D Halton sequence over the grid, as the Halton scheduler of MaskGIT-style
//                 models (Besnier et al., 2025) spreads tokens over the image: for k = 0, 1, 2, …
//                 the point (φ₂(k), φ₃(k)) of the radical-inverse functions in bases 2 and 3 picks
//                 the cell (row ⌊φ₂(k)·h⌋, col ⌊φ₃(k)·w⌋); a cell already listed is skipped, and
//                 k runs until every cell is listed (k = 0 gives (0, 0), so the order starts at the
//                 top-left cell). Consecutive cells are far apart, so early tokens cover the whole
//                 image coarsely.
//   near_to_far:  Neighboring AR's order (He et al., 2025): cells by increasing Manhattan distance
//                 row + col from the top-left cell — ring (anti-diagonal) by ring — and within a
//                 ring by increasing row. NAR decodes a ring in parallel; a one-token-per-step
//                 schedule walks the ring instead. The last cell is the bottom-right one.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "tessera/core/config.h"

namespace tessera {
/// The order in which the raster schedule visits grid positions.
enum class GenerationOrder { raster, halton, near_to_far };

template <>
struct ConfigEnum<GenerationOrder> {  /// Each value with its name.
  static constexpr std::pair<GenerationOrder, const char*> values[] = {
      {GenerationOrder::raster, "raster"},
      {GenerationOrder::halton, "halton"},
      {GenerationOrder::near_to_far, "near_to_far"}};
};  ///< The names of GenerationOrder values in JSON configs.

/// "raster", "halton", "near_to_far".
const char* generation_order_name(GenerationOrder order);

/// The radical inverse of k in `base` (k's digits mirrored behind the point): φ₂(6) = 0.011₂ = 3/8.
double radical_inverse(int64_t k, int64_t base);

/// order[i] = the raster index of the cell generated at step i. See Note [Generation orders].
/// Throws tessera::Error for an empty grid.
std::vector<int64_t> generation_order(GenerationOrder order, int64_t height, int64_t width);

/// The order as an int64 CPU tensor [h·w].
at::Tensor generation_order_tensor(GenerationOrder order, int64_t height, int64_t width);

}  // namespace tessera
