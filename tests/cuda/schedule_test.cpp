// The CUDA kernels' work lists (kernels/cuda/schedule.h), checked on the CPU for every mask rule
// and ragged lengths: the forward pass's key chunks of each query tile visit every visible
// (query, key) pair exactly once, no chunk is wider than a tile, and a chunk marked full holds
// only visible pairs; the backward pass's key blocks partition the keys and list, for every
// visible pair, the query tile that holds it, again with full entries holding only visible pairs.
// Runs without a GPU (the schedule is host code); skipped in builds without CUDA (a failure under
// TESSERA_REQUIRE_ALL: common/prerequisite.h).

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"
#include "common/prerequisite.h"
#include "tessera/attention/block_mask.h"

#ifdef TESSERA_WITH_CUDA
#include "../../kernels/cuda/attention_kernels.h"
#include "../../kernels/cuda/schedule.h"
#endif

namespace tessera {
namespace {

#ifdef TESSERA_WITH_CUDA

void check_forward(const BlockMask& mask, const at::Tensor& allowed, const std::string& label) {
  SCOPED_TRACE(label);
  const int64_t lq = mask.query_length(), lk = mask.key_length();
  const std::vector<QueryTile>& plan = mask.plan(cuda::kTileRows).tiles;
  const cuda::ForwardSchedule s = cuda::make_forward_schedule(plan, cuda::kTileKeys);
  ASSERT_EQ(static_cast<size_t>(s.num_tiles()), plan.size());
  // visits[q][k]: how many chunks of q's tile hold key k.
  at::Tensor visits = at::zeros({lq, lk}, at::kInt);
  auto v = visits.accessor<int32_t, 2>();
  auto a = allowed.accessor<bool, 2>();
  std::vector<int> rows_covered(static_cast<size_t>(lq), 0);
  int64_t previous_cost = -1;
  for (int32_t t = 0; t < s.num_tiles(); ++t) {
    const int32_t q0 = s.tiles[4 * t], q1 = s.tiles[4 * t + 1];
    const int32_t c0 = s.tiles[4 * t + 2], c1 = s.tiles[4 * t + 3];
    ASSERT_LT(q0, q1);
    ASSERT_LE(q1 - q0, cuda::kTileRows);
    ASSERT_LE(c0, c1);
    for (int32_t q = q0; q < q1; ++q) ++rows_covered[static_cast<size_t>(q)];
    int64_t span = 0;
    for (int32_t c = c0; c < c1; ++c) {
      const int32_t k0 = s.chunks[4 * c], k1 = s.chunks[4 * c + 1];
      const bool full = s.chunks[4 * c + 2] != 0;
      ASSERT_LT(k0, k1);
      ASSERT_LE(k1 - k0, cuda::kTileKeys);
      ASSERT_GE(k0, 0);
      ASSERT_LE(k1, lk);
      span += k1 - k0;
      for (int32_t q = q0; q < q1; ++q) {
        for (int32_t k = k0; k < k1; ++k) {
          ++v[q][k];
          if (full) {
            ASSERT_TRUE(a[q][k]) << "full chunk [" << k0 << ", " << k1 << ") of rows [" << q0
                                 << ", " << q1 << ") holds the masked pair " << q << ", " << k;
          }
        }
      }
    }
    // Heaviest first.
    const int64_t cost = static_cast<int64_t>(q1 - q0) * span;
    if (previous_cost >= 0) {
      EXPECT_LE(cost, previous_cost) << "tile " << t;
    }
    previous_cost = cost;
  }
  for (int64_t q = 0; q < lq; ++q) ASSERT_EQ(rows_covered[static_cast<size_t>(q)], 1) << q;
  for (int64_t q = 0; q < lq; ++q) {
    for (int64_t k = 0; k < lk; ++k) {
      if (a[q][k]) {
        ASSERT_EQ(v[q][k], 1) << "visible pair " << q << ", " << k;
      } else {
        ASSERT_LE(v[q][k], 1) << "pair " << q << ", " << k;
      }
    }
  }
}

void check_backward(const BlockMask& mask, const at::Tensor& allowed, const std::string& label) {
  SCOPED_TRACE(label);
  const int64_t lq = mask.query_length(), lk = mask.key_length();
  const std::vector<QueryTile>& plan = mask.plan(cuda::kTileRows).tiles;
  const cuda::BackwardSchedule s = cuda::make_backward_schedule(plan, lk, cuda::kTileKeys);
  ASSERT_EQ(s.num_key_blocks(), (lk + cuda::kTileKeys - 1) / cuda::kTileKeys);
  at::Tensor visits = at::zeros({lq, lk}, at::kInt);
  auto v = visits.accessor<int32_t, 2>();
  auto a = allowed.accessor<bool, 2>();
  std::vector<int> keys_covered(static_cast<size_t>(lk), 0);
  for (int32_t b = 0; b < s.num_key_blocks(); ++b) {
    const int32_t n0 = s.key_blocks[4 * b], n1 = s.key_blocks[4 * b + 1];
    const int32_t e0 = s.key_blocks[4 * b + 2], e1 = s.key_blocks[4 * b + 3];
    ASSERT_LT(n0, n1);
    ASSERT_LE(n1 - n0, cuda::kTileKeys);
    for (int32_t k = n0; k < n1; ++k) ++keys_covered[static_cast<size_t>(k)];
    for (int32_t e = e0; e < e1; ++e) {
      const int32_t q0 = s.entries[4 * e], q1 = s.entries[4 * e + 1];
      const bool full = s.entries[4 * e + 2] != 0;
      ASSERT_LT(q0, q1);
      ASSERT_LE(q1 - q0, cuda::kTileRows);
      for (int32_t q = q0; q < q1; ++q) {
        for (int32_t k = n0; k < n1; ++k) {
          ++v[q][k];
          if (full) {
            ASSERT_TRUE(a[q][k]) << "full entry holds the masked pair " << q << ", " << k;
          }
        }
      }
    }
  }
  for (int64_t k = 0; k < lk; ++k) ASSERT_EQ(keys_covered[static_cast<size_t>(k)], 1) << k;
  for (int64_t q = 0; q < lq; ++q) {
    for (int64_t k = 0; k < lk; ++k) {
      if (a[q][k]) {
        ASSERT_EQ(v[q][k], 1) << "visible pair " << q << ", " << k;
      } else {
        ASSERT_LE(v[q][k], 1) << "pair " << q << ", " << k;
      }
    }
  }
}

TEST(CudaSchedule, EveryRuleAndRaggedLengths) {
  uint64_t seed = 11;
  for (const std::string& name : testing::all_rule_names()) {
    for (int64_t length : {1, 7, 63, 64, 65, 130, 200, 680}) {
      const testing::MaskCase c = testing::make_mask_case(name, length, seed++);
      ASSERT_TRUE(c.mask.to_dense().equal(c.allowed)) << name << " " << length;
      const std::string label = name + " L=" + std::to_string(length);
      check_forward(c.mask, c.allowed, label);
      check_backward(c.mask, c.allowed, label);
    }
  }
}

TEST(CudaSchedule, QueryLengthDiffersFromKeyLength) {
  for (auto [lq, lk] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 97}, {5, 97}, {64, 700}, {70, 3}}) {
    const BlockMask mask = BlockMask::causal_tail(lq, std::max(lq, lk));
    const std::string label = "causal_tail " + std::to_string(lq) + "x" + std::to_string(lk);
    check_forward(mask, mask.to_dense(), label);
    check_backward(mask, mask.to_dense(), label);
  }
  const std::vector<int64_t> segs = testing::test_segments(680);
  const BlockMask rows = BlockMask::block_causal(TokenLayout(segs)).rows(285, 680);
  check_forward(rows, rows.to_dense(), "block_causal rows 285..680");
  check_backward(rows, rows.to_dense(), "block_causal rows 285..680");
}

TEST(CudaSchedule, RowsThatSeeNoKeyGetATileWithoutChunks) {
  const int64_t lq = 9, lk = 20;
  const BlockMask mask =
      BlockMask::from_intervals(std::vector<int64_t>(lq, 4), std::vector<int64_t>(lq, 4), lk);
  const cuda::ForwardSchedule f =
      cuda::make_forward_schedule(mask.plan(cuda::kTileRows).tiles, cuda::kTileKeys);
  ASSERT_EQ(f.num_tiles(), 1);
  EXPECT_EQ(f.tiles[2], f.tiles[3]);  // no chunk: output 0, lse -inf
  const cuda::BackwardSchedule b =
      cuda::make_backward_schedule(mask.plan(cuda::kTileRows).tiles, lk, cuda::kTileKeys);
  ASSERT_EQ(b.num_key_blocks(), 1);
  EXPECT_EQ(b.key_blocks[2], b.key_blocks[3]);  // listed, with no entry: dK = dV = 0
}

#else

TEST(CudaSchedule, BuiltWithoutCuda) {
  TESSERA_SKIP_FOR_MISSING(
      "nvcc: this build has no CUDA kernels (the CUDA toolkit was not found "
      "at configure time)");
}

#endif

}  // namespace
}  // namespace tessera
