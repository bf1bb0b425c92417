#include "tessera/attention/block_mask.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

#include "tessera/core/error.h"

namespace tessera {

const char* to_string(MaskRule rule) {
  switch (rule) {
    case MaskRule::causal:
      return "causal";
    case MaskRule::bidirectional:
      return "bidirectional";
    case MaskRule::block_causal:
      return "block_causal";
    case MaskRule::block_diagonal:
      return "block_diagonal";
    case MaskRule::self_and_previous:
      return "self_and_previous";
    case MaskRule::banded:
      return "banded";
    case MaskRule::prefix_lm:
      return "prefix_lm";
    case MaskRule::intervals:
      return "intervals";
    case MaskRule::dense:
      return "dense";
  }
  return "unknown";
}

double TileStats::density() const {
  const int64_t all = empty + full + partial;
  return all == 0 ? 0.0 : static_cast<double>(full + partial) / static_cast<double>(all);
}

// Plans keyed by max_rows. std::map never moves its values, so the references plan() hands out
// stay valid while other tile sizes are added.
struct BlockMask::PlanCache {
  std::mutex mutex;
  std::map<int64_t, TilePlan> plans;
};

namespace {

struct Intervals {
  std::vector<int64_t> begin, end;
};

// Per-row key intervals of a rule over a layout, in one pass over the segments: O(L).
Intervals layout_intervals(MaskRule rule, const TokenLayout& layout, int64_t band) {
  TESSERA_CHECK(layout.length() >= 1,
                "BlockMask::{}: the token layout is empty; expected at least one token",
                to_string(rule));
  const int64_t n = layout.length();
  Intervals iv;
  iv.begin.resize(n);
  iv.end.resize(n);
  for (int64_t s = 0; s < layout.num_segments(); ++s) {
    const int64_t seg_begin = layout.segment_begin(s), seg_end = layout.segment_end(s);
    for (int64_t q = seg_begin; q < seg_end; ++q) {
      int64_t b = 0, e = n;
      switch (rule) {
        case MaskRule::causal:
          e = q + 1;
          break;
        case MaskRule::bidirectional:
          break;
        case MaskRule::block_causal:
          e = seg_end;
          break;
        case MaskRule::block_diagonal:
          b = seg_begin, e = seg_end;
          break;
        case MaskRule::self_and_previous:
          b = layout.segment_begin(std::max<int64_t>(s - 1, 0)), e = seg_end;
          break;
        case MaskRule::banded:
          b = std::max<int64_t>(0, q - band), e = q + 1 + std::min(band, n - 1 - q);
          break;
        case MaskRule::prefix_lm:
          e = s == 0 ? seg_end : q + 1;
          break;
        case MaskRule::intervals:
        case MaskRule::dense:
          TESSERA_FAIL("BlockMask: rule {} is not built from a layout", to_string(rule));
      }
      iv.begin[q] = b;
      iv.end[q] = e;
    }
  }
  return iv;
}

// The layout's segments clipped to positions [begin, end), renumbered from 0.
TokenLayout slice_layout(const TokenLayout& layout, int64_t begin, int64_t end) {
  if (layout.length() == 0) return {};
  std::vector<int64_t> lengths;
  for (int64_t s = layout.segment_of(begin); s < layout.num_segments(); ++s) {
    const int64_t b = std::max(begin, layout.segment_begin(s));
    const int64_t e = std::min(end, layout.segment_end(s));
    if (b >= e) break;
    lengths.push_back(e - b);
  }
  return TokenLayout(std::move(lengths));
}

// Whether the rule's intervals change at segment boundaries; only then do query tiles follow the
// segments. Causal, bidirectional and banded masks ignore segments, so uniform tiles serve them
// best whatever layout they were built from.
bool tiles_follow_segments(MaskRule rule) {
  switch (rule) {
    case MaskRule::block_causal:
    case MaskRule::block_diagonal:
    case MaskRule::self_and_previous:
    case MaskRule::prefix_lm:
    case MaskRule::intervals:
      return true;
    default:
      return false;
  }
}

}  // namespace

// --- construction ----------------------------------------------------------------------------

BlockMask BlockMask::causal(int64_t length) {
  TESSERA_CHECK(length >= 1, "BlockMask::causal: length must be >= 1, got {}", length);
  return causal(TokenLayout::single(length));
}

BlockMask BlockMask::bidirectional(int64_t length) {
  TESSERA_CHECK(length >= 1, "BlockMask::bidirectional: length must be >= 1, got {}", length);
  return bidirectional(TokenLayout::single(length));
}

namespace {
// The rule's intervals as a mask; the caller (a member) then stamps the rule on it.
BlockMask layout_mask(MaskRule rule, const TokenLayout& layout, int64_t band) {
  Intervals iv = layout_intervals(rule, layout, band);
  return BlockMask::from_intervals(std::move(iv.begin), std::move(iv.end), layout.length(), layout);
}
}  // namespace

BlockMask BlockMask::causal(const TokenLayout& layout) {
  BlockMask m = layout_mask(MaskRule::causal, layout, 0);
  m.rule_ = MaskRule::causal;
  return m;
}

BlockMask BlockMask::bidirectional(const TokenLayout& layout) {
  BlockMask m = layout_mask(MaskRule::bidirectional, layout, 0);
  m.rule_ = MaskRule::bidirectional;
  return m;
}

BlockMask BlockMask::block_causal(const TokenLayout& layout) {
  BlockMask m = layout_mask(MaskRule::block_causal, layout, 0);
  m.rule_ = MaskRule::block_causal;
  return m;
}

BlockMask BlockMask::block_diagonal(const TokenLayout& layout) {
  BlockMask m = layout_mask(MaskRule::block_diagonal, layout, 0);
  m.rule_ = MaskRule::block_diagonal;
  return m;
}

BlockMask BlockMask::self_and_previous(const TokenLayout& layout) {
  BlockMask m = layout_mask(MaskRule::self_and_previous, layout, 0);
  m.rule_ = MaskRule::self_and_previous;
  return m;
}

BlockMask BlockMask::banded(const TokenLayout& layout, int64_t band) {
  TESSERA_CHECK(band >= 0, "BlockMask::banded: band must be >= 0, got {}", band);
  BlockMask m = layout_mask(MaskRule::banded, layout, band);
  m.rule_ = MaskRule::banded;
  return m;
}

BlockMask BlockMask::prefix_lm(const TokenLayout& layout) {
  BlockMask m = layout_mask(MaskRule::prefix_lm, layout, 0);
  m.rule_ = MaskRule::prefix_lm;
  return m;
}

BlockMask BlockMask::from_intervals(std::vector<int64_t> begin, std::vector<int64_t> end,
                                    int64_t key_length, TokenLayout query_layout) {
  TESSERA_CHECK(begin.size() == end.size(),
                "BlockMask::from_intervals: begin has {} entries but end has {}; expected one "
                "[begin, end) per query row in both",
                begin.size(), end.size());
  TESSERA_CHECK(!begin.empty(),
                "BlockMask::from_intervals: no query rows; expected at least one interval");
  TESSERA_CHECK(key_length >= 1, "BlockMask::from_intervals: key_length must be >= 1, got {}",
                key_length);
  const auto rows = static_cast<int64_t>(begin.size());
  TESSERA_CHECK(query_layout.length() == 0 || query_layout.length() == rows,
                "BlockMask::from_intervals: the query layout covers {} tokens but there are {} "
                "query rows; expected equal lengths (or no layout)",
                query_layout.length(), rows);
  // Normalise to 0 <= begin <= end <= key_length so kernels can trust the bounds.
  for (int64_t q = 0; q < rows; ++q) {
    const int64_t b = std::clamp<int64_t>(begin[q], 0, key_length);
    const int64_t e = std::clamp<int64_t>(end[q], 0, key_length);
    begin[q] = b;
    end[q] = std::max(b, e);
  }
  BlockMask m;
  m.rule_ = MaskRule::intervals;
  m.query_length_ = rows;
  m.key_length_ = key_length;
  m.query_layout_ = std::move(query_layout);
  m.begin_ = std::move(begin);
  m.end_ = std::move(end);
  m.plans_ = std::make_shared<PlanCache>();
  return m;
}

BlockMask BlockMask::from_dense(const at::Tensor& allowed) {
  TESSERA_CHECK(allowed.defined(), "BlockMask::from_dense: the mask tensor is undefined");
  TESSERA_CHECK(allowed.dim() == 2,
                "BlockMask::from_dense: expected a 2-D [query_length, key_length] mask, got {} "
                "dimensions",
                allowed.dim());
  TESSERA_CHECK(allowed.scalar_type() == at::kBool,
                "BlockMask::from_dense: expected a bool mask (true = may attend), got {}",
                c10::toString(allowed.scalar_type()));
  const int64_t lq = allowed.size(0), lk = allowed.size(1);
  TESSERA_CHECK(lq >= 1 && lk >= 1,
                "BlockMask::from_dense: expected at least one query and one key, got a {}x{} mask",
                lq, lk);
  BlockMask m;
  m.rule_ = MaskRule::dense;
  m.query_length_ = lq;
  m.key_length_ = lk;
  // A private copy: the caller may write to its tensor later, which must not change this mask or
  // invalidate its cached plans.
  m.dense_ = allowed.to(at::kCPU).clone(at::MemoryFormat::Contiguous);
  // Per-row bounds (first visible key, last visible key + 1) for the tile plan; see key_begin().
  m.begin_.assign(lq, 0);
  m.end_.assign(lq, 0);
  const bool* data = m.dense_.data_ptr<bool>();
  for (int64_t q = 0; q < lq; ++q) {
    const bool* row = data + q * lk;
    int64_t first = 0;
    while (first < lk && !row[first]) ++first;
    if (first == lk) continue;
    int64_t last = lk - 1;
    while (!row[last]) --last;
    m.begin_[q] = first;
    m.end_[q] = last + 1;
  }
  m.plans_ = std::make_shared<PlanCache>();
  return m;
}

BlockMask BlockMask::causal_tail(int64_t query_length, int64_t key_length) {
  TESSERA_CHECK(query_length >= 1, "BlockMask::causal_tail: query_length must be >= 1, got {}",
                query_length);
  TESSERA_CHECK(query_length <= key_length,
                "BlockMask::causal_tail: query_length {} exceeds key_length {}; the queries must "
                "be the last query_length positions of the keys",
                query_length, key_length);
  std::vector<int64_t> b(query_length, 0), e(query_length);
  const int64_t offset = key_length - query_length;
  for (int64_t q = 0; q < query_length; ++q) e[q] = offset + q + 1;
  BlockMask m = from_intervals(std::move(b), std::move(e), key_length);
  m.rule_ = MaskRule::causal;
  return m;
}

BlockMask BlockMask::rows(int64_t begin, int64_t end) const {
  TESSERA_CHECK(0 <= begin && begin < end && end <= query_length_,
                "BlockMask::rows: rows [{}, {}) are out of range; expected 0 <= begin < end <= {} "
                "(the query length)",
                begin, end, query_length_);
  BlockMask m;
  m.rule_ = rule_;
  m.query_length_ = end - begin;
  m.key_length_ = key_length_;
  m.query_layout_ = slice_layout(query_layout_, begin, end);
  m.begin_.assign(begin_.begin() + begin, begin_.begin() + end);
  m.end_.assign(end_.begin() + begin, end_.begin() + end);
  if (dense_.defined()) m.dense_ = dense_.slice(0, begin, end).clone(at::MemoryFormat::Contiguous);
  m.plans_ = std::make_shared<PlanCache>();
  return m;
}

// --- queries -----------------------------------------------------------------------------------

bool BlockMask::allowed(int64_t q, int64_t k) const {
  TESSERA_CHECK(0 <= q && q < query_length_ && 0 <= k && k < key_length_,
                "BlockMask::allowed: (q, k) = ({}, {}) is outside the {}x{} mask", q, k,
                query_length_, key_length_);
  if (rule_ == MaskRule::dense) return dense_.data_ptr<bool>()[q * key_length_ + k];
  return begin_[q] <= k && k < end_[q];
}

int64_t BlockMask::visible_count() const {
  if (rule_ == MaskRule::dense) return dense_.sum().item<int64_t>();
  int64_t n = 0;
  for (size_t q = 0; q < begin_.size(); ++q) n += end_[q] - begin_[q];
  return n;
}

double BlockMask::element_density() const {
  return static_cast<double>(visible_count()) /
         (static_cast<double>(query_length_) * static_cast<double>(key_length_));
}

TileStats BlockMask::tile_stats(int64_t tile) const {
  TESSERA_CHECK(tile >= 1, "BlockMask::tile_stats: tile must be >= 1, got {}", tile);
  TileStats stats;
  stats.tile = tile;
  const int64_t nq = (query_length_ + tile - 1) / tile;
  const int64_t nk = (key_length_ + tile - 1) / tile;
  if (rule_ == MaskRule::dense) {
    // Allowed elements per tile against the tile's area (ragged edge tiles are smaller).
    const int64_t pad_q = nq * tile - query_length_, pad_k = nk * tile - key_length_;
    auto per_tile = [&](const at::Tensor& x) {
      return at::constant_pad_nd(x.to(at::kInt), {0, pad_k, 0, pad_q}, 0)
          .view({nq, tile, nk, tile})
          .sum({1, 3});
    };
    const at::Tensor counts = per_tile(dense_);
    const at::Tensor areas = per_tile(at::ones_like(dense_));
    stats.empty = counts.eq(0).sum().item<int64_t>();
    stats.full = counts.eq(areas).sum().item<int64_t>();
    stats.partial = nq * nk - stats.empty - stats.full;
    return stats;
  }
  // Per tile row: key tiles touched by some row (a difference array over each row's range of key
  // tiles, exact even when the rows' intervals leave gaps), and the keys every row sees.
  std::vector<int64_t> touched(nk + 1);
  for (int64_t tq = 0; tq < nq; ++tq) {
    const int64_t q0 = tq * tile, q1 = std::min(query_length_, q0 + tile);
    std::fill(touched.begin(), touched.end(), 0);
    int64_t max_begin = 0, min_end = key_length_;
    for (int64_t q = q0; q < q1; ++q) {
      max_begin = std::max(max_begin, begin_[q]);
      min_end = std::min(min_end, end_[q]);
      if (begin_[q] < end_[q]) {
        ++touched[begin_[q] / tile];
        --touched[(end_[q] - 1) / tile + 1];
      }
    }
    int64_t covering = 0;
    for (int64_t tk = 0; tk < nk; ++tk) {
      covering += touched[tk];
      const int64_t k0 = tk * tile, k1 = std::min(key_length_, k0 + tile);
      if (covering == 0) {
        ++stats.empty;
      } else if (max_begin <= k0 && k1 <= min_end) {
        ++stats.full;
      } else {
        ++stats.partial;
      }
    }
  }
  return stats;
}

const TilePlan& BlockMask::plan(int64_t max_rows) const {
  TESSERA_CHECK(max_rows >= 1, "BlockMask::plan: max_rows must be >= 1, got {}", max_rows);
  TESSERA_CHECK(plans_ != nullptr, "BlockMask::plan: this mask was moved from");
  std::lock_guard<std::mutex> lock(plans_->mutex);
  auto it = plans_->plans.find(max_rows);
  if (it == plans_->plans.end()) {
    // Built under the lock: O(L), and concurrent callers then never build the same plan twice.
    TilePlanMask view;
    view.key_begin = begin_;
    view.key_end = end_;
    view.key_length = key_length_;
    if (rule_ == MaskRule::dense) view.dense = dense_.const_data_ptr<bool>();
    std::vector<int64_t> segment_starts;
    if (tiles_follow_segments(rule_) && query_layout_.num_segments() > 1) {
      for (int64_t s = 1; s < query_layout_.num_segments(); ++s) {
        segment_starts.push_back(query_layout_.segment_begin(s));
      }
    }
    view.segment_starts = segment_starts;
    it = plans_->plans.emplace(max_rows, make_tile_plan(view, max_rows)).first;
  }
  return it->second;
}

at::Tensor BlockMask::to_dense() const {
  if (rule_ == MaskRule::dense) return dense_.clone();
  const at::Tensor b = at::tensor(begin_, at::kLong).unsqueeze(1);
  const at::Tensor e = at::tensor(end_, at::kLong).unsqueeze(1);
  const at::Tensor k = at::arange(key_length_, at::kLong).unsqueeze(0);
  return k.ge(b).logical_and(k.lt(e));
}

std::string BlockMask::summary(int64_t tile) const {
  const TileStats stats = tile_stats(tile);
  const std::string segments = query_layout_.num_segments() > 0
                                   ? fmt::format(" ({} segment{})", query_layout_.num_segments(),
                                                 query_layout_.num_segments() == 1 ? "" : "s")
                                   : "";
  return fmt::format("{} {}x{}{}: element density {:.3f}, {}-tiles {} full / {} partial / {} empty",
                     to_string(rule_), query_length_, key_length_, segments, element_density(),
                     tile, stats.full, stats.partial, stats.empty);
}

}  // namespace tessera
