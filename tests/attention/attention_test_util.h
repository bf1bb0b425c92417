#pragma once
// Independent definitions the attention tests compare against: every mask rule written as the
// plain predicate of its definition (segment ids from a linear scan, no TokenLayout or BlockMask
// code), and dense fp64 masked attention written with plain ATen ops.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tessera/attention/block_mask.h"
#include "tessera/core/error.h"

namespace tessera::testing {

inline const std::vector<int64_t>& var_patch_nums_680() {
  static const std::vector<int64_t> p{1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
  return p;
}
inline const std::vector<int64_t>& var_patch_nums_2240() {
  static const std::vector<int64_t> p{1, 2, 3, 4, 6, 9, 13, 18, 24, 32};
  return p;
}

// Segments summing to `length`: a VAR pyramid prefix (1, 4, 9, ...) as far as it fits, then
// ragged segments of 37 and a remainder. 680 gives exactly the VAR pyramid.
inline std::vector<int64_t> test_segments(int64_t length) {
  std::vector<int64_t> segs;
  int64_t used = 0;
  for (int64_t p : var_patch_nums_680()) {
    if (used + p * p > length) break;
    segs.push_back(p * p);
    used += p * p;
  }
  while (used < length) {
    const int64_t n = std::min<int64_t>(37, length - used);
    segs.push_back(n);
    used += n;
  }
  return segs;
}

// Segment id of every position, by a linear scan.
inline std::vector<int64_t> segment_ids(const std::vector<int64_t>& segs) {
  std::vector<int64_t> ids;
  for (size_t s = 0; s < segs.size(); ++s) ids.insert(ids.end(), segs[s], static_cast<int64_t>(s));
  return ids;
}

// The rule's mask from its definition: bool [L, L], L = sum(segs).
inline at::Tensor rule_mask(MaskRule rule, const std::vector<int64_t>& segs, int64_t band = 0) {
  const std::vector<int64_t> seg = segment_ids(segs);
  const auto n = static_cast<int64_t>(seg.size());
  at::Tensor m = at::zeros({n, n}, at::kBool);
  auto a = m.accessor<bool, 2>();
  for (int64_t q = 0; q < n; ++q) {
    for (int64_t k = 0; k < n; ++k) {
      bool ok = false;
      switch (rule) {
        case MaskRule::causal:
          ok = k <= q;
          break;
        case MaskRule::bidirectional:
          ok = true;
          break;
        case MaskRule::block_causal:
          ok = seg[k] <= seg[q];
          break;
        case MaskRule::block_diagonal:
          ok = seg[k] == seg[q];
          break;
        case MaskRule::self_and_previous:
          ok = seg[q] - 1 <= seg[k] && seg[k] <= seg[q];
          break;
        case MaskRule::banded:
          ok = std::abs(q - k) <= band;
          break;
        case MaskRule::prefix_lm:
          ok = (seg[q] == 0 && seg[k] == 0) || k <= q;
          break;
        default:
          ADD_FAILURE() << "rule_mask: not a layout rule";
      }
      a[q][k] = ok;
    }
  }
  return m;
}

// Random [begin, end) per row, some out of range (they clamp), some empty (begin >= end).
struct RandomIntervals {
  std::vector<int64_t> begin, end;
};
inline RandomIntervals random_intervals(int64_t rows, int64_t keys, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pos(-3, keys + 3);
  RandomIntervals iv;
  for (int64_t q = 0; q < rows; ++q) {
    int64_t b = pos(rng), e = pos(rng);
    if (rng() % 4 != 0 && b > e) std::swap(b, e);  // mostly proper intervals, some empty
    iv.begin.push_back(b);
    iv.end.push_back(e);
  }
  return iv;
}
inline at::Tensor intervals_mask(const RandomIntervals& iv, int64_t keys) {
  const auto rows = static_cast<int64_t>(iv.begin.size());
  at::Tensor m = at::zeros({rows, keys}, at::kBool);
  auto a = m.accessor<bool, 2>();
  for (int64_t q = 0; q < rows; ++q) {
    for (int64_t k = 0; k < keys; ++k) a[q][k] = iv.begin[q] <= k && k < iv.end[q];
  }
  return m;
}

// Random bool mask with every fifth row all false.
inline at::Tensor random_dense_mask(int64_t rows, int64_t keys, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor m = at::rand({rows, keys}, gen, at::kDouble).lt(0.3);
  for (int64_t q = 0; q < rows; q += 5) m[q].fill_(false);
  return m;
}

// The rules the attention tests sweep, by name.
inline const std::vector<std::string>& all_rule_names() {
  static const std::vector<std::string> names{"causal",         "bidirectional",     "block_causal",
                                              "block_diagonal", "self_and_previous", "banded5",
                                              "prefix_lm",      "intervals",         "dense"};
  return names;
}

struct MaskCase {
  BlockMask mask;
  at::Tensor allowed;  // bool [Lq, Lk], from the independent definition
};

inline MaskCase make_mask_case(const std::string& name, int64_t length, uint64_t seed = 7) {
  const std::vector<int64_t> segs = test_segments(length);
  const TokenLayout layout(segs);
  if (name == "causal") return {BlockMask::causal(layout), rule_mask(MaskRule::causal, segs)};
  if (name == "bidirectional") {
    return {BlockMask::bidirectional(layout), rule_mask(MaskRule::bidirectional, segs)};
  }
  if (name == "block_causal") {
    return {BlockMask::block_causal(layout), rule_mask(MaskRule::block_causal, segs)};
  }
  if (name == "block_diagonal") {
    return {BlockMask::block_diagonal(layout), rule_mask(MaskRule::block_diagonal, segs)};
  }
  if (name == "self_and_previous") {
    return {BlockMask::self_and_previous(layout), rule_mask(MaskRule::self_and_previous, segs)};
  }
  if (name == "banded5") {
    return {BlockMask::banded(layout, 5), rule_mask(MaskRule::banded, segs, 5)};
  }
  if (name == "prefix_lm") {
    return {BlockMask::prefix_lm(layout), rule_mask(MaskRule::prefix_lm, segs)};
  }
  if (name == "intervals") {
    RandomIntervals iv = random_intervals(length, length, seed);
    at::Tensor allowed = intervals_mask(iv, length);
    return {BlockMask::from_intervals(iv.begin, iv.end, length, layout), allowed};
  }
  if (name == "dense") {
    at::Tensor allowed = random_dense_mask(length, length, seed);
    return {BlockMask::from_dense(allowed), allowed};
  }
  ADD_FAILURE() << "unknown rule " << name;
  return {BlockMask::bidirectional(length), rule_mask(MaskRule::bidirectional, segs)};
}

inline at::Tensor randn(at::IntArrayRef shape, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kDouble)).to(dtype);
}

// Dense masked attention in the inputs' dtype (use float64), differentiable by autograd:
// softmax(scale q k^T masked) v with rows that see no key defined as 0. Such rows' scores are
// replaced by a finite constant before the softmax and their probabilities multiplied by the
// (all false) mask, so neither the forward nor the gradient ever meets 0/0.
struct DenseAttention {
  at::Tensor out, lse;
};
inline DenseAttention dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& allowed, double scale) {
  const at::Tensor m = allowed.to(q.device());
  const at::Tensor empty_row = m.logical_not().all(-1, /*keepdim=*/true);
  const at::Tensor s = at::matmul(q, k.transpose(-2, -1)) * scale;
  const at::Tensor masked =
      s.masked_fill(m.logical_not(), -std::numeric_limits<double>::infinity());
  const at::Tensor p = at::softmax(masked.masked_fill(empty_row, 0.0), -1) * m.to(q.scalar_type());
  return {at::matmul(p, v), at::logsumexp(masked, -1)};
}

// max |actual - expected| <= atol + rtol * |expected|, elementwise, with -inf == -inf.
inline ::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected,
                                            double atol, double rtol) {
  const at::Tensor a = actual.to(at::kDouble).cpu(), e = expected.to(at::kDouble).cpu();
  if (a.sizes() != e.sizes()) {
    return ::testing::AssertionFailure() << "shape " << a.sizes() << " != " << e.sizes();
  }
  if (a.isnan().any().item<bool>()) return ::testing::AssertionFailure() << "NaN in the result";
  const at::Tensor same_inf = a.isinf().logical_and(e.isinf()).logical_and(a.eq(e));
  const at::Tensor diff = (a - e).abs().masked_fill(same_inf, 0.0);
  const at::Tensor bound = e.abs().masked_fill(same_inf, 0.0) * rtol + atol;
  const at::Tensor bad = diff.gt(bound).logical_or(diff.isnan());
  if (bad.any().item<bool>()) {
    const int64_t idx = bad.flatten().nonzero()[0][0].item<int64_t>();
    return ::testing::AssertionFailure()
           << bad.sum().item<int64_t>() << " of " << a.numel() << " elements differ; first at "
           << idx << ": got " << a.flatten()[idx].item<double>() << ", expected "
           << e.flatten()[idx].item<double>() << "; max abs diff "
           << diff.masked_fill(diff.isnan(), 0).max().item<double>();
  }
  return ::testing::AssertionSuccess();
}

// Runs `statement`, expects a tessera::Error whose message contains `needle`.
#define EXPECT_TESSERA_ERROR(statement, needle)                                     \
  do {                                                                              \
    try {                                                                           \
      statement;                                                                    \
      ADD_FAILURE() << "expected tessera::Error containing \"" << (needle) << "\""; \
    } catch (const ::tessera::Error& error_) {                                      \
      EXPECT_NE(std::string(error_.what()).find(needle), std::string::npos)         \
          << "message: " << error_.what();                                          \
    }                                                                               \
  } while (false)

}  // namespace tessera::testing
