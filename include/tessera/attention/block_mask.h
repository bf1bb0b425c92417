#pragma once
// BlockMask: which keys each query may attend to, in a form the kernels can skip work with.
//
// Note [Interval masks]
// Every mask the schedules need gives each query row a single interval of visible keys
// [key_begin(q), key_end(q)): causal, bidirectional, block-causal over segments (VAR),
// block-diagonal (HMAR), self plus previous segment, banded, prefix-LM. For a tile of query rows
// [q0, q1) the keys visible to some row form the interval [min begin, max end) and the keys
// visible to every row form [max begin, min end): keys outside the first are skipped (empty
// tiles), keys inside the second need no per-element mask (full tiles), the rest are partial.
// So the kernels never materialise an L x L mask; they read two int64 per row. Query tiles are
// cut at segment boundaries (see plan()), which lets block-structured masks reach their element
// density rather than the coarser density of a fixed square grid.
// Masks that are not intervals come from a dense boolean tensor (the slow path): the tile plan
// then bounds each tile by its first and last visible key and checks every element of it.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tessera/kernels/tile_plan.h"  // QueryTile, TilePlan
#include "tessera/attention/token_layout.h"

namespace tessera {
/// The kinds of BlockMask, by how rows' visible keys are defined.
enum class MaskRule {
  causal,             ///< k <= q (with a query offset when the queries are the tail of the keys)
  bidirectional,      ///< every key
  block_causal,       ///< segment(k) <= segment(q): VAR's training mask
  block_diagonal,     ///< segment(k) == segment(q): HMAR's Markovian mask
  self_and_previous,  ///< segment(q) - 1 <= segment(k) <= segment(q)
  banded,             ///< |q - k| <= band (MAGNeT)
  prefix_lm,          ///< the first segment is bidirectional within itself; the rest causal
  intervals,          ///< user-given [begin, end) per query row
  dense,              ///< an arbitrary boolean mask
};

const char* to_string(MaskRule rule);  ///< The rule's name ("causal", "block_causal", ...).

/// Counts on a fixed square grid of tile x tile elements, for reporting and benchmarks.
struct TileStats {  /// Tile side; counts of empty, full and partial tiles. @{
  int64_t tile = 0;  ///< side of the square tiles, in elements
  int64_t empty = 0, full = 0, partial = 0;  /** @} */
  double density() const;  ///< (full + partial) / all tiles
};

class BlockMask {
 public:
  // --- rules over a layout (query length == key length == layout.length()) ---
  static BlockMask causal(int64_t length);  ///< Row q sees keys [0, q]; `length` queries and keys.
  static BlockMask bidirectional(int64_t length);  ///< Every row sees all `length` keys.
  static BlockMask causal(const TokenLayout& layout);  ///< Row q sees keys [0, q].
  static BlockMask bidirectional(const TokenLayout& layout);  ///< Every row sees every key.
  static BlockMask block_causal(const TokenLayout& layout);  ///< Own and earlier segments (VAR).
  static BlockMask block_diagonal(const TokenLayout& layout);  ///< Own segment only (HMAR).
  static BlockMask self_and_previous(const TokenLayout& layout);  ///< Own and previous segment.
  static BlockMask banded(const TokenLayout& layout, int64_t band);  ///< Keys with |q - k| <= band.
  /// The first segment of `layout` is the bidirectional prefix.
  static BlockMask prefix_lm(const TokenLayout& layout);
  /// User rule: row q sees keys [begin[q], end[q]) (clamped to [0, key_length]; begin >= end
  /// means no key). Optional layout for query tiling.
  static BlockMask from_intervals(std::vector<int64_t> begin, std::vector<int64_t> end,
                                  int64_t key_length, TokenLayout query_layout = {});
  /// Any boolean [Lq, Lk] tensor (true = may attend). Slow path, still exact.
  static BlockMask from_dense(const at::Tensor& allowed);

  /// Causal attention of the last `query_length` positions of a `key_length` sequence (a decoding
  /// step against a KV cache): row q sees keys [0, key_length - query_length + q + 1).
  static BlockMask causal_tail(int64_t query_length, int64_t key_length);

  /// The mask restricted to query rows [begin, end): what a step's queries see of the full
  /// sequence (keys are unchanged).
  BlockMask rows(int64_t begin, int64_t end) const;

  MaskRule rule() const { return rule_; }  ///< The rule the mask was built with.
  int64_t query_length() const { return query_length_; }  ///< Lq: the number of query rows.
  int64_t key_length() const { return key_length_; }  ///< Lk: the number of keys.
  bool is_interval() const { return rule_ != MaskRule::dense; }  ///< Whether the rule is not dense.
  const TokenLayout& query_layout() const { return query_layout_; }  ///< Where query tiles are cut.

  /// Interval masks: visible keys of row q are [key_begin()[q], key_end()[q]), with
  /// 0 <= begin <= end <= key_length (begin == end: no key). Dense masks: the bounds of row q's
  /// visible keys (first, last + 1; both 0 for a row with none); keys inside still need checking
  /// against dense_mask().
  const std::vector<int64_t>& key_begin() const { return begin_; }
  const std::vector<int64_t>& key_end() const { return end_; }  ///< See key_begin().
  /// Dense masks: the bool [Lq, Lk] tensor, contiguous, on the CPU.
  const at::Tensor& dense_mask() const { return dense_; }

  bool allowed(int64_t q, int64_t k) const;  ///< Whether query row q may attend to key k.
  int64_t visible_count() const;      ///< number of allowed (q, k) pairs
  double element_density() const;    ///< visible_count / (Lq * Lk)
  TileStats tile_stats(int64_t tile) const;  ///< Tile counts for square tiles of `tile` elements.

  /// The tile plan for query tiles of at most `max_rows` rows. Built once per tile size and cached
  /// (thread-safe); the mask object can be shared across calls and threads.
  const TilePlan& plan(int64_t max_rows) const;

  /// bool [Lq, Lk] on the CPU (true = may attend): for the dense reference and for SDPA.
  at::Tensor to_dense() const;

  /// "block_causal 680x680 (10 segments): element density 0.619, 64-tiles 68 full / 17 partial / 36 empty"
  std::string summary(int64_t tile = 64) const;

 private:
  BlockMask() = default;
  struct PlanCache;

  MaskRule rule_ = MaskRule::bidirectional;
  int64_t query_length_ = 0, key_length_ = 0;
  TokenLayout query_layout_;
  std::vector<int64_t> begin_, end_;
  at::Tensor dense_;
  std::shared_ptr<PlanCache> plans_;
};  ///< Which keys each query row sees: a rule over a TokenLayout, intervals or a dense mask.

}  // namespace tessera
