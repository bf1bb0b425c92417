#pragma once
// A token layout: the sequence as consecutive segments (the scales of a VAR pyramid, a prefix and
// a body, codebook levels). Masks are built from it.

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

class TokenLayout {
 public:
  TokenLayout() = default;
  /// Segments of the given lengths, in order; every length must be >= 1.
  explicit TokenLayout(std::vector<int64_t> segment_lengths);

  /// One segment of `length` tokens.
  static TokenLayout single(int64_t length);
  /// A next-scale pyramid: segment s holds patch_nums[s]^2 tokens (VAR: 1,2,3,4,5,6,8,10,13,16
  /// gives 680 tokens).
  static TokenLayout pyramid(const std::vector<int64_t>& patch_nums);

  int64_t length() const { return offsets_.empty() ? 0 : offsets_.back(); }  ///< Total positions.
  int64_t num_segments() const { return static_cast<int64_t>(lengths_.size()); }  ///< Segments.
  int64_t segment_length(int64_t s) const { return lengths_.at(s); }  ///< Length of segment `s`.
  int64_t segment_begin(int64_t s) const { return offsets_.at(s); }  ///< First position of s.
  int64_t segment_end(int64_t s) const { return offsets_.at(s + 1); }  ///< Segment s's end.
  /// The segment holding position `pos` (0 <= pos < length()).
  int64_t segment_of(int64_t pos) const;
  const std::vector<int64_t>& segment_lengths() const { return lengths_; }  ///< Lengths, in order.

  std::string to_string() const;  ///< Readable form, for messages.
  bool operator==(const TokenLayout& other) const { return lengths_ == other.lengths_; }
  ///< Equal when the segment lengths are.
 private:
  std::vector<int64_t> lengths_;
  std::vector<int64_t> offsets_{0};  // offsets_[s] = first position of segment s; back() = length
};  ///< A sequence cut into consecutive segments (scales, a condition prefix); masks follow it.

}  // namespace tessera
