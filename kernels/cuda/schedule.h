#pragma once
// The CUDA kernels' work lists, built on the host from a BlockMask's tile plan (plain C++, so
// tests/cuda checks them without a GPU).
//
// Note [CUDA attention schedule]
// Forward: the query tiles of BlockMask::plan(kTileRows), each with its key chunks: the partial
// region [key_begin, full_begin), the full region [full_begin, full_end) and the partial region
// [full_end, key_end), each cut into ceil(len / kTileKeys) chunks of near-equal width (what the
// CPU kernel's for_each_key_chunk does), so no chunk straddles a full / partial boundary and a
// full chunk needs no element check. A tile whose rows see no key has no chunk (its rows get 0
// and lse -inf). Tiles are listed heaviest first (rows x visible key range), as the blocks of the
// first waves should be the long ones.
// Backward: keys cut into fixed blocks of kTileKeys (each block owns its dK and dV rows); a key
// block lists every query tile whose key range meets it, flagged full when the block lies inside
// the tile's full range, partial otherwise. Every key block is listed, also one that no query sees
// (its dK, dV are written as 0). Blocks are listed heaviest first (sum of rows x keys).

#include <cstdint>
#include <vector>

#include "tessera/kernels/tile_plan.h"

namespace tessera::cuda {

struct ForwardSchedule {
  std::vector<int32_t> tiles;   // 4 per query tile: q_begin, q_end, chunk_begin, chunk_end
  std::vector<int32_t> chunks;  // 4 per key chunk: k_begin, k_end, full (0 / 1), 0
  int32_t num_tiles() const { return static_cast<int32_t>(tiles.size() / 4); }
};

struct BackwardSchedule {
  std::vector<int32_t> key_blocks;  // 4 per key block: k_begin, k_end, entry_begin, entry_end
  std::vector<int32_t> entries;     // 4 per entry: q_begin, q_end, full (0 / 1), 0
  int32_t num_key_blocks() const { return static_cast<int32_t>(key_blocks.size() / 4); }
};

// `tiles`: BlockMask::plan(rows).tiles for rows <= the kernel's kTileRows. chunk: the most keys
// per chunk (kTileKeys). Lengths must fit in int32 (checked: tessera::Error otherwise).
ForwardSchedule make_forward_schedule(const std::vector<QueryTile>& tiles, int64_t chunk);
BackwardSchedule make_backward_schedule(const std::vector<QueryTile>& tiles, int64_t key_length,
                                        int64_t block);

}  // namespace tessera::cuda
