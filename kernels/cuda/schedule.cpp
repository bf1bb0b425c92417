// The CUDA kernels' work lists. See Note [CUDA attention schedule] in schedule.h.

#include "cuda/schedule.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "tessera/core/error.h"

namespace tessera::cuda {

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

int32_t narrow(int64_t value, const char* what) {
  TESSERA_CHECK(value >= 0 && value <= kInt32Max,
                "attention (cuda): {} = {} does not fit the kernels' 32-bit indices", what, value);
  return static_cast<int32_t>(value);
}

// Indices 0..n-1 ordered by decreasing cost (stable: equal costs keep their order).
std::vector<size_t> heaviest_first(const std::vector<int64_t>& cost) {
  std::vector<size_t> order(cost.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  return order;
}

}  // namespace

ForwardSchedule make_forward_schedule(const std::vector<QueryTile>& tiles, int64_t chunk) {
  TESSERA_CHECK(chunk >= 1, "attention (cuda): chunk width must be >= 1, got {}", chunk);
  std::vector<int64_t> cost;
  cost.reserve(tiles.size());
  for (const QueryTile& t : tiles) {
    cost.push_back((t.q_end - t.q_begin) * std::max<int64_t>(0, t.key_end - t.key_begin));
  }
  ForwardSchedule s;
  s.tiles.reserve(4 * tiles.size());
  for (const size_t i : heaviest_first(cost)) {
    const QueryTile& t = tiles[i];
    const auto chunk_begin = static_cast<int64_t>(s.chunks.size() / 4);
    // The same clamping as the CPU kernel's for_each_key_chunk.
    const int64_t kb = t.key_begin;
    const int64_t ke = std::max(kb, t.key_end);
    const int64_t fb = std::clamp(t.full_begin, kb, ke);
    const int64_t fe = std::clamp(t.full_end, fb, ke);
    auto region = [&](int64_t r0, int64_t r1, bool full) {
      const int64_t len = r1 - r0;
      if (len <= 0) return;
      const int64_t pieces = (len + chunk - 1) / chunk;
      for (int64_t j = 0; j < pieces; ++j) {
        s.chunks.push_back(narrow(r0 + j * len / pieces, "key index"));
        s.chunks.push_back(narrow(r0 + (j + 1) * len / pieces, "key index"));
        s.chunks.push_back(full ? 1 : 0);
        s.chunks.push_back(0);
      }
    };
    region(kb, fb, false);
    region(fb, fe, true);
    region(fe, ke, false);
    s.tiles.push_back(narrow(t.q_begin, "query index"));
    s.tiles.push_back(narrow(t.q_end, "query index"));
    s.tiles.push_back(narrow(chunk_begin, "chunk count"));
    s.tiles.push_back(narrow(static_cast<int64_t>(s.chunks.size() / 4), "chunk count"));
  }
  return s;
}

BackwardSchedule make_backward_schedule(const std::vector<QueryTile>& tiles, int64_t key_length,
                                        int64_t block) {
  TESSERA_CHECK(block >= 1, "attention (cuda): key block width must be >= 1, got {}", block);
  narrow(key_length, "key length");
  const int64_t num_blocks = (key_length + block - 1) / block;
  // Entries per key block, in query-tile order.
  std::vector<std::vector<int32_t>> per_block(static_cast<size_t>(num_blocks));
  std::vector<int64_t> cost(static_cast<size_t>(num_blocks), 0);
  for (const QueryTile& t : tiles) {
    if (t.key_begin >= t.key_end) continue;  // rows that see no key: no gradient to add
    const int64_t first = t.key_begin / block;
    const int64_t last = (t.key_end - 1) / block;  // inclusive
    for (int64_t b = first; b <= last && b < num_blocks; ++b) {
      const int64_t n0 = b * block, n1 = std::min(key_length, n0 + block);
      if (std::max(t.key_begin, n0) >= std::min(t.key_end, n1)) continue;
      const bool full = t.full_begin <= n0 && n1 <= t.full_end;
      auto& list = per_block[static_cast<size_t>(b)];
      list.push_back(narrow(t.q_begin, "query index"));
      list.push_back(narrow(t.q_end, "query index"));
      list.push_back(full ? 1 : 0);
      list.push_back(0);
      cost[static_cast<size_t>(b)] += (t.q_end - t.q_begin) * (n1 - n0);
    }
  }
  BackwardSchedule s;
  s.key_blocks.reserve(static_cast<size_t>(4 * num_blocks));
  for (const size_t b : heaviest_first(cost)) {
    const int64_t n0 = static_cast<int64_t>(b) * block;
    const int64_t n1 = std::min(key_length, n0 + block);
    const auto entry_begin = static_cast<int64_t>(s.entries.size() / 4);
    s.entries.insert(s.entries.end(), per_block[b].begin(), per_block[b].end());
    s.key_blocks.push_back(narrow(n0, "key index"));
    s.key_blocks.push_back(narrow(n1, "key index"));
    s.key_blocks.push_back(narrow(entry_begin, "entry count"));
    s.key_blocks.push_back(narrow(static_cast<int64_t>(s.entries.size() / 4), "entry count"));
  }
  return s;
}

}  // namespace tessera::cuda
