// The shared masked-decoding arithmetic against hand-computed values (Note [Masked decoding
// counts]) and MaskGIT's / MAR's published formula.
#include "tessera/schedule/masking.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {
namespace {

TEST(MaskingCurve, EndpointsAndKnownValues) {
  for (auto curve : {MaskingCurve::cosine, MaskingCurve::arccos, MaskingCurve::linear,
                     MaskingCurve::square, MaskingCurve::cubic, MaskingCurve::sqrt}) {
    EXPECT_NEAR(masked_fraction(curve, 0.0), 1.0, 1e-12);
    EXPECT_NEAR(masked_fraction(curve, 1.0), 0.0, 1e-12);
  }
  EXPECT_NEAR(masked_fraction(MaskingCurve::cosine, 0.5), std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(masked_fraction(MaskingCurve::arccos, 0.5), 2.0 / 3.0, 1e-12);  // acos(1/2) = π/3
  EXPECT_NEAR(masked_fraction(MaskingCurve::square, 0.5), 0.75, 1e-12);
  EXPECT_NEAR(masked_fraction(MaskingCurve::cubic, 0.5), 0.875, 1e-12);
  EXPECT_NEAR(masked_fraction(MaskingCurve::sqrt, 0.25), 0.5, 1e-12);
  EXPECT_THROW(masked_fraction(MaskingCurve::cosine, 1.5), Error);
}

TEST(MaskedAfterStep, CosineEightStepsOnSixtyFourTokens) {
  // floor(64·cos(π/2·(s+1)/8)) for s = 0..6, by hand: 62 59 53 45 35 24 12; the last step 0.
  const std::vector<int64_t> expected = {62, 59, 53, 45, 35, 24, 12, 0};
  int64_t masked = 64;
  for (int64_t s = 0; s < 8; ++s) {
    masked = masked_after_step(MaskingCurve::cosine, 64, s, 8, masked);
    EXPECT_EQ(masked, expected[static_cast<size_t>(s)]) << "step " << s;
  }
}

TEST(MaskedAfterStep, ClampsToCommitAtLeastOneAndKeepOne) {
  // Many steps on few tokens: the formula would commit nothing; the clamp commits one per step.
  EXPECT_EQ(masked_after_step(MaskingCurve::cosine, 4, 0, 20, 4), 3);
  // Few steps: floor(N·γ) = 0 before the last step is clamped up to 1.
  EXPECT_EQ(masked_after_step(MaskingCurve::linear, 4, 1, 3, 3), 1);
  EXPECT_EQ(masked_after_step(MaskingCurve::linear, 4, 0, 1, 4), 0);
  EXPECT_THROW(masked_after_step(MaskingCurve::cosine, 4, 4, 4, 2), Error);
  EXPECT_THROW(masked_after_step(MaskingCurve::cosine, 4, 0, 0, 4), Error);
  EXPECT_THROW(masked_after_step(MaskingCurve::cosine, 4, 0, 4, 5), Error);
}

TEST(LowestConfidence, PicksPerRowAmongCandidatesWithStableTies) {
  const at::Tensor confidence =
      at::tensor({0.5, 0.1, 0.9, 0.1, 0.3, 0.2, 0.2, 0.0}, at::kDouble).view({2, 4});
  const at::Tensor candidates =
      at::tensor({1, 1, 1, 1, 1, 1, 1, 0}, at::kInt).to(at::kBool).view({2, 4});
  const at::Tensor chosen = lowest_confidence(confidence, candidates, 2);
  // Row 0: 0.1 at 1 and 3. Row 1: 0.2 at 1 and 2 (position 3 is not a candidate).
  const at::Tensor expected =
      at::tensor({0, 1, 0, 1, 0, 1, 1, 0}, at::kInt).to(at::kBool).view({2, 4});
  EXPECT_TRUE(at::equal(chosen, expected));
  // Ties: the lower position first.
  const at::Tensor flat = at::zeros({1, 5});
  const at::Tensor all = at::ones({1, 5}, at::kBool);
  EXPECT_TRUE(at::equal(lowest_confidence(flat, all, 2),
                        at::tensor({1, 1, 0, 0, 0}, at::kInt).to(at::kBool).view({1, 5})));
  EXPECT_THROW(lowest_confidence(confidence, candidates, 4), Error);
}

}  // namespace
}  // namespace tessera
