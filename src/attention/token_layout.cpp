#include "tessera/attention/token_layout.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "tessera/core/error.h"

namespace tessera {

TokenLayout::TokenLayout(std::vector<int64_t> segment_lengths)
    : lengths_(std::move(segment_lengths)) {
  offsets_.reserve(lengths_.size() + 1);
  for (size_t s = 0; s < lengths_.size(); ++s) {
    const int64_t n = lengths_[s];
    TESSERA_CHECK(n >= 1,
                  "TokenLayout: segment {} has length {}; every segment length must be >= 1", s, n);
    TESSERA_CHECK(offsets_.back() <= std::numeric_limits<int64_t>::max() - n,
                  "TokenLayout: the total length overflows int64 at segment {} (length {})", s, n);
    offsets_.push_back(offsets_.back() + n);
  }
}

TokenLayout TokenLayout::single(int64_t length) {
  TESSERA_CHECK(length >= 1, "TokenLayout::single: length must be >= 1, got {}", length);
  return TokenLayout(std::vector<int64_t>{length});
}

TokenLayout TokenLayout::pyramid(const std::vector<int64_t>& patch_nums) {
  TESSERA_CHECK(!patch_nums.empty(), "TokenLayout::pyramid: needs at least one scale, got none");
  std::vector<int64_t> lengths;
  lengths.reserve(patch_nums.size());
  for (size_t s = 0; s < patch_nums.size(); ++s) {
    const int64_t p = patch_nums[s];
    // 2^31 squared still fits int64; anything larger is certainly a mistake.
    TESSERA_CHECK(p >= 1 && p <= (int64_t{1} << 31),
                  "TokenLayout::pyramid: patch_nums[{}] = {}; expected a side length in [1, 2^31]",
                  s, p);
    lengths.push_back(p * p);
  }
  return TokenLayout(std::move(lengths));
}

int64_t TokenLayout::segment_of(int64_t pos) const {
  TESSERA_CHECK(pos >= 0 && pos < length(),
                "TokenLayout::segment_of: position {} is outside the layout's [0, {})", pos,
                length());
  // offsets_ is strictly increasing; the segment is the last offset <= pos.
  const auto it = std::upper_bound(offsets_.begin(), offsets_.end(), pos);
  return static_cast<int64_t>(it - offsets_.begin()) - 1;
}

std::string TokenLayout::to_string() const {
  return fmt::format("TokenLayout[{}] ({} tokens)", fmt::join(lengths_, ", "), length());
}

}  // namespace tessera
