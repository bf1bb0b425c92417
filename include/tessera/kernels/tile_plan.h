#pragma once
// Tile plans: how an attention kernel walks a mask (BlockMask::plan builds them). Plain C++ with no
// LibTorch, in the kernels module so that the kernels (kernels/cpu, kernels/cuda) read a plan
// without knowing BlockMask or ATen, and attention depends on kernels, never the reverse.

#include <cstdint>
#include <span>
#include <vector>

namespace tessera {

/// One query tile of a TilePlan. Keys outside [key_begin, key_end) are invisible to every row of
/// the tile; keys inside [full_begin, full_end) are visible to every row (full_begin >= full_end
/// when no key is). Always key_begin <= full_begin <= full_end <= key_end; a tile whose rows see no
/// key has key_begin == key_end. For a dense mask the full range is the longest run of keys that
/// every row of the tile allows.
struct QueryTile {  /// Query rows; keys some row may see; keys every row sees. @{
  int64_t q_begin = 0, q_end = 0;
  int64_t key_begin = 0, key_end = 0;
  int64_t full_begin = 0, full_end = 0;  /** @} */
};

/// How a kernel walks the mask: query tiles of at most `max_rows` rows, in order, covering every
/// query row. For the rules whose intervals change at segment boundaries (block-causal,
/// block-diagonal, self+previous, prefix-LM, intervals with a layout) tiles are cut at the query
/// layout's boundaries, and consecutive small segments share a tile when that adds little work
/// (Note [Query tile merging] in tile_plan.cpp); other masks get ceil(Lq / max_rows) near-equal
/// tiles.
struct TilePlan {
  int64_t max_rows = 0;  ///< largest number of query rows in one tile
  std::vector<QueryTile> tiles;  ///< in query order, covering every row once
};

/// What make_tile_plan reads of a mask: per query row the bounds [key_begin[q], key_end[q]) of its
/// visible keys (0 <= begin, end <= key_length; begin >= end: no key), and for a dense mask the
/// row-major [Lq, key_length] booleans (true = may attend; then the bounds are each row's first
/// and last visible key + 1, and the keys inside still need checking).
struct TilePlanMask {
  std::span<const int64_t> key_begin;  ///< [Lq]
  std::span<const int64_t> key_end;    ///< [Lq]
  int64_t key_length = 0;              ///< Lk
  const bool* dense = nullptr;         ///< [Lq, Lk] row-major, or null for an interval mask
  /// Where query tiles must be cut: the starts of the query layout's segments after the first
  /// (ascending, inside (0, Lq)); empty for near-equal tiles over all rows.
  std::span<const int64_t> segment_starts;
};

/// The plan for query tiles of at most `max_rows` (>= 1) rows; see TilePlan.
TilePlan make_tile_plan(const TilePlanMask& mask, int64_t max_rows);

}  // namespace tessera
