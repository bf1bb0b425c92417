// Tile plans (include/tessera/kernels/tile_plan.h): query tiles cut at segment boundaries and
// merged while that adds little work. Plain C++: BlockMask::plan calls it with the mask's rows.

#include "tessera/kernels/tile_plan.h"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {

namespace {

// The keys visible to some row of a group of rows: [lo, hi), empty (lo >= hi) when no row sees
// a key. Rows with an empty interval add nothing.
struct Hull {
  int64_t lo = std::numeric_limits<int64_t>::max();
  int64_t hi = std::numeric_limits<int64_t>::min();
  bool empty() const { return lo >= hi; }
  int64_t width() const { return empty() ? 0 : hi - lo; }
  Hull operator|(const Hull& o) const { return {std::min(lo, o.lo), std::max(hi, o.hi)}; }
};

Hull row_hull(const TilePlanMask& mask, int64_t q0, int64_t q1) {
  Hull h;
  const auto& b = mask.key_begin;
  const auto& e = mask.key_end;
  for (int64_t q = q0; q < q1; ++q) {
    if (b[q] < e[q]) h = h | Hull{b[q], e[q]};
  }
  return h;
}

// Note [Query tile merging]
// make_tile_plan first cuts the query rows at the segment boundaries it is given (BlockMask::plan
// gives the query layout's, for the rules whose intervals change there) and splits a segment
// longer than max_rows into ceil(len / max_rows) tiles of near-equal size. A pyramid then starts
// with tiny segments (1, 4, 9, ... rows) whose tiles would be mostly per-tile overhead: a 1-row
// tile is a matrix-vector product. So consecutive pieces are merged greedily while
//   (a) the merged tile still has at most max_rows rows, and
//   (b) its computed area, rows x (key_end - key_begin), exceeds the sum of the areas of the
//       pieces it absorbed by at most max(25% of that sum, 1024 elements).
// The area is what the kernel pays for a tile (every key of [key_begin, key_end) is visited for
// every row), so (b) bounds the extra work merging may add: 25% of a tile, or one 32 x 32 block,
// which costs less than the fixed overhead of running a separate small tile. The bound is against
// the pieces' own areas, not the running merged area, so waste cannot compound along a chain.
// For VAR's 680-token pyramid and max_rows = 64 this merges scales 1-4 (30 rows) under the
// block-diagonal and self+previous masks and scales 1-5 (55 rows) under block-causal, and leaves
// every larger scale on tiles of its own; the computed area stays within 0.5% of the visible
// elements (within 1.2% for every VAR mask, pyramid and max_rows in {32, 64, 128}). Merging stops
// where the key range jumps: block-diagonal scales 5 and 6 in one 61-row tile would cost twice
// the area of two tiles. Pieces of one split segment never merge: any two of them hold more than
// max_rows rows together.
constexpr double kMergeRelativeSlack = 0.25;
constexpr int64_t kMergeAbsoluteSlack = 32 * 32;

}  // namespace

TilePlan make_tile_plan(const TilePlanMask& mask, int64_t max_rows) {
  TESSERA_CHECK(max_rows >= 1, "make_tile_plan: max_rows must be >= 1, got {}", max_rows);
  TESSERA_CHECK(mask.key_begin.size() == mask.key_end.size() && !mask.key_begin.empty(),
                "make_tile_plan: expected one [begin, end) per query row, got {} begins and {} "
                "ends",
                mask.key_begin.size(), mask.key_end.size());
  const auto lq = static_cast<int64_t>(mask.key_begin.size());
  std::vector<std::pair<int64_t, int64_t>> pieces;
  auto split = [&](int64_t s0, int64_t s1) {
    const int64_t n = s1 - s0;
    const int64_t m = (n + max_rows - 1) / max_rows;
    for (int64_t i = 0; i < m; ++i) pieces.emplace_back(s0 + i * n / m, s0 + (i + 1) * n / m);
  };
  int64_t start = 0;
  for (const int64_t cut : mask.segment_starts) {
    TESSERA_CHECK(start <= cut && cut <= lq,
                  "make_tile_plan: segment starts must ascend within [0, {}], got {} after {}", lq,
                  cut, start);
    split(start, cut);
    start = cut;
  }
  split(start, lq);

  // Greedy merging; see Note [Query tile merging].
  std::vector<std::pair<int64_t, int64_t>> groups;
  int64_t g0 = pieces[0].first, g1 = pieces[0].second;
  Hull g_hull = row_hull(mask, g0, g1);
  double g_piece_area = static_cast<double>((g1 - g0) * g_hull.width());
  for (size_t i = 1; i < pieces.size(); ++i) {
    const auto [p0, p1] = pieces[i];
    const Hull p_hull = row_hull(mask, p0, p1);
    const double p_area = static_cast<double>((p1 - p0) * p_hull.width());
    const Hull merged = g_hull | p_hull;
    const double merged_area = static_cast<double>((p1 - g0) * merged.width());
    const double pieces_area = g_piece_area + p_area;
    const double slack =
        std::max(kMergeRelativeSlack * pieces_area, static_cast<double>(kMergeAbsoluteSlack));
    if (p1 - g0 <= max_rows && merged_area <= pieces_area + slack) {
      g1 = p1;
      g_hull = merged;
      g_piece_area = pieces_area;
    } else {
      groups.emplace_back(g0, g1);
      g0 = p0, g1 = p1, g_hull = p_hull, g_piece_area = p_area;
    }
  }
  groups.emplace_back(g0, g1);

  TilePlan plan;
  plan.max_rows = max_rows;
  plan.tiles.reserve(groups.size());
  const auto& b = mask.key_begin;
  const auto& e = mask.key_end;
  const int64_t lk = mask.key_length;
  for (const auto& [q0, q1] : groups) {
    QueryTile t;
    t.q_begin = q0;
    t.q_end = q1;
    const Hull h = row_hull(mask, q0, q1);
    if (!h.empty()) {
      t.key_begin = h.lo;
      t.key_end = h.hi;
    }
    int64_t full_begin = 0, full_end = 0;
    if (mask.dense == nullptr) {
      // Keys every row sees: [max begin, min end).
      full_begin = std::numeric_limits<int64_t>::min();
      full_end = std::numeric_limits<int64_t>::max();
      for (int64_t q = q0; q < q1; ++q) {
        full_begin = std::max(full_begin, b[q]);
        full_end = std::min(full_end, e[q]);
      }
    } else if (!h.empty()) {
      // Dense: the longest run of key columns that every row of the tile allows.
      auto column_full = [&](int64_t k) {
        for (int64_t q = q0; q < q1; ++q) {
          if (!mask.dense[q * lk + k]) return false;
        }
        return true;
      };
      std::vector<char> col(static_cast<size_t>(h.hi - h.lo));
      for (int64_t k = h.lo; k < h.hi; ++k) col[k - h.lo] = column_full(k) ? 1 : 0;
      for (int64_t k = h.lo; k < h.hi;) {
        if (!col[k - h.lo]) {
          ++k;
          continue;
        }
        int64_t r = k;
        while (r < h.hi && col[r - h.lo]) ++r;
        if (r - k > full_end - full_begin) full_begin = k, full_end = r;
        k = r;
      }
    }
    if (full_begin < full_end) {
      t.full_begin = full_begin;
      t.full_end = full_end;
    } else {
      // Keep key_begin <= full_begin <= full_end <= key_end even when no key is full.
      t.full_begin = t.full_end = t.key_begin;
    }
    plan.tiles.push_back(t);
  }
  return plan;
}

}  // namespace tessera
