// The Fréchet distance against closed forms: identical sets, diagonal (commuting) covariances,
// and a non-commuting 2x2 case through tr √A = √(tr A + 2√det A) for a 2x2 PSD A.

#include "tessera/eval/frechet_distance.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"

namespace tessera {
namespace {

GaussianStats stats(std::vector<double> mean, std::vector<double> covariance) {
  const int64_t d = static_cast<int64_t>(mean.size());
  return {at::tensor(mean, at::kDouble), at::tensor(covariance, at::kDouble).reshape({d, d}), 0};
}

TEST(FrechetDistance, IdenticalSetsGiveZero) {
  at::Generator g = make_cpu_generator(3);
  const at::Tensor features = at::randn({500, 16}, g) * 3 + 1;
  const GaussianStats s = fit_gaussian(features);
  EXPECT_NEAR(frechet_distance(s, s), 0.0, 1e-9);
  // Rank-deficient covariance (fewer samples than dimensions) still gives 0, not NaN.
  const GaussianStats low_rank = fit_gaussian(at::randn({5, 16}, g));
  EXPECT_NEAR(frechet_distance(low_rank, low_rank), 0.0, 1e-9);
}

TEST(FrechetDistance, DiagonalCovariancesClosedForm) {
  // Commuting covariances: d² = ‖Δμ‖² + Σ (√aᵢ − √bᵢ)².
  const GaussianStats a = stats({1, 2, 3}, {4, 0, 0, 0, 9, 0, 0, 0, 0.25});
  const GaussianStats b = stats({0, 2, 5}, {1, 0, 0, 0, 16, 0, 0, 0, 0.25});
  const double expected = (1 + 0 + 4) + (2 - 1) * (2 - 1) + (3 - 4) * (3 - 4) + 0;
  EXPECT_NEAR(frechet_distance(a, b), expected, 1e-12);
  EXPECT_NEAR(frechet_distance(b, a), expected, 1e-12);
}

TEST(FrechetDistance, HandComputedTwoByTwo) {
  // Σ1 = [[2, 1], [1, 2]] (eigenvalues 3 and 1), Σ2 = I: tr √(Σ1) = √3 + 1,
  // d² = 0 + 4 + 2 − 2(√3 + 1) = 4 − 2√3.
  EXPECT_NEAR(frechet_distance(stats({0, 0}, {2, 1, 1, 2}), stats({0, 0}, {1, 0, 0, 1})),
              4 - 2 * std::sqrt(3.0), 1e-12);
  // Non-commuting: Σ2 = diag(1, 3). M = Σ1^½ Σ2 Σ1^½ has tr M = tr(Σ1 Σ2) = 2 + 6 = 8 and
  // det M = det Σ1 · det Σ2 = 3 · 3 = 9, so tr √M = √(8 + 2·3) = √14; with Δμ = (1, −1):
  // d² = 2 + 4 + 4 − 2√14.
  EXPECT_NEAR(frechet_distance(stats({1, 0}, {2, 1, 1, 2}), stats({0, 1}, {1, 0, 0, 3})),
              10 - 2 * std::sqrt(14.0), 1e-12);
}

TEST(FrechetDistance, FitGaussianIsMeanAndUnbiasedCovariance) {
  // Points (0,0), (2,0), (0,2), (2,2): mean (1,1); covariance diag(4/3, 4/3) (divided by N − 1).
  const GaussianStats s = fit_gaussian(at::tensor({0.f, 0.f, 2.f, 0.f, 0.f, 2.f, 2.f, 2.f})
                                           .reshape({4, 2}));
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.mean.scalar_type(), at::kDouble);
  EXPECT_NEAR(s.mean[0].item<double>(), 1.0, 1e-15);
  EXPECT_NEAR(s.covariance[0][0].item<double>(), 4.0 / 3.0, 1e-15);
  EXPECT_NEAR(s.covariance[0][1].item<double>(), 0.0, 1e-15);
  EXPECT_NEAR(s.covariance[1][1].item<double>(), 4.0 / 3.0, 1e-15);
}

TEST(FrechetDistance, RejectsBadInput) {
  EXPECT_THROW(fit_gaussian(at::zeros({1, 3})), Error);
  EXPECT_THROW(fit_gaussian(at::zeros({3})), Error);
  EXPECT_THROW(fit_gaussian(at::full({3, 2}, std::nan(""))), Error);
  EXPECT_THROW(frechet_distance(stats({0, 0}, {1, 0, 0, 1}), stats({0}, {1})), Error);
  EXPECT_THROW(frechet_distance(stats({0, 0}, {1, 0, 0, 1}), GaussianStats{}), Error);
}

}  // namespace
}  // namespace tessera
