#include "tessera/attention/token_layout.h"

#include <gtest/gtest.h>

#include "attention/attention_test_util.h"
#include "tessera/core/error.h"

namespace tessera {
namespace {

using testing::var_patch_nums_2240;
using testing::var_patch_nums_680;

TEST(TokenLayout, PyramidLengthsAndOffsets) {
  const TokenLayout var = TokenLayout::pyramid(var_patch_nums_680());
  EXPECT_EQ(var.length(), 680);
  EXPECT_EQ(var.num_segments(), 10);
  EXPECT_EQ(TokenLayout::pyramid(var_patch_nums_2240()).length(), 2240);
  int64_t offset = 0;
  for (int64_t s = 0; s < var.num_segments(); ++s) {
    const int64_t p = var_patch_nums_680()[static_cast<size_t>(s)];
    EXPECT_EQ(var.segment_length(s), p * p);
    EXPECT_EQ(var.segment_begin(s), offset);
    offset += p * p;
    EXPECT_EQ(var.segment_end(s), offset);
  }
}

TEST(TokenLayout, SegmentOfMatchesALinearScan) {
  for (const std::vector<int64_t>& lengths :
       {std::vector<int64_t>{1}, std::vector<int64_t>{5}, std::vector<int64_t>{1, 1, 1},
        std::vector<int64_t>{3, 1, 7, 2}, testing::test_segments(1000)}) {
    const TokenLayout layout(lengths);
    const std::vector<int64_t> ids = testing::segment_ids(lengths);
    ASSERT_EQ(layout.length(), static_cast<int64_t>(ids.size()));
    for (int64_t pos = 0; pos < layout.length(); ++pos) {
      EXPECT_EQ(layout.segment_of(pos), ids[static_cast<size_t>(pos)]) << "pos " << pos;
    }
  }
}

TEST(TokenLayout, SingleAndEmpty) {
  const TokenLayout one = TokenLayout::single(7);
  EXPECT_EQ(one.length(), 7);
  EXPECT_EQ(one.num_segments(), 1);
  EXPECT_EQ(one.segment_of(6), 0);
  const TokenLayout none;
  EXPECT_EQ(none.length(), 0);
  EXPECT_EQ(none.num_segments(), 0);
  EXPECT_EQ(TokenLayout(std::vector<int64_t>{}), none);
  EXPECT_EQ(TokenLayout::pyramid({1, 2}), TokenLayout({1, 4}));
}

TEST(TokenLayout, ToStringNamesTheSegments) {
  const std::string text = TokenLayout({1, 4, 9}).to_string();
  EXPECT_NE(text.find("1, 4, 9"), std::string::npos) << text;
  EXPECT_NE(text.find("14 tokens"), std::string::npos) << text;
}

TEST(TokenLayout, RejectsBadLengths) {
  EXPECT_TESSERA_ERROR(TokenLayout({3, 0, 2}), "segment 1 has length 0");
  EXPECT_TESSERA_ERROR(TokenLayout({-4}), "segment 0 has length -4");
  EXPECT_TESSERA_ERROR(TokenLayout::single(0), "length must be >= 1, got 0");
  EXPECT_TESSERA_ERROR(TokenLayout::pyramid({1, 0, 3}), "patch_nums[1] = 0");
  EXPECT_TESSERA_ERROR(TokenLayout::pyramid({}), "at least one scale");
}

TEST(TokenLayout, SegmentOfRejectsPositionsOutside) {
  const TokenLayout layout({2, 3});
  EXPECT_TESSERA_ERROR(layout.segment_of(5), "position 5 is outside the layout's [0, 5)");
  EXPECT_TESSERA_ERROR(layout.segment_of(-1), "position -1");
  EXPECT_TESSERA_ERROR(TokenLayout().segment_of(0), "outside");
}

}  // namespace
}  // namespace tessera
