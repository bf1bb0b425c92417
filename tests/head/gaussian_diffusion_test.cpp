// The diffusion tables against IDDPM's formulas and fixtures computed with Python.

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/head/gaussian_diffusion.h"

namespace tessera {
namespace {

long double cosine_alpha_bar(long double t) {
  const long double c = std::cos((t + 0.008L) / 1.008L * std::numbers::pi_v<long double> / 2);
  return c * c;
}

TEST(GaussianDiffusion, CosineBetasFollowTheAlphaBarFormula) {
  const std::vector<double> betas = diffusion_betas(BetaSchedule::cosine, 1000);
  ASSERT_EQ(betas.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    const long double expected =
        std::min(1.0L - cosine_alpha_bar((i + 1) / 1000.0L) / cosine_alpha_bar(i / 1000.0L), 0.999L);
    EXPECT_NEAR(betas[i], static_cast<double>(expected), 1e-12 + 1e-9 * static_cast<double>(expected)) << i;
  }
  // Fixture: IDDPM's betas_for_alpha_bar in Python.
  EXPECT_NEAR(betas[0], 4.128422482196914e-05, 1e-17);
  EXPECT_NEAR(betas[500], 0.003155691441585007, 1e-15);
  EXPECT_EQ(betas[999], 0.999);  // clipped
}

TEST(GaussianDiffusion, LinearBetasSpanHoEtAlsRange) {
  const std::vector<double> betas = diffusion_betas(BetaSchedule::linear, 1000);
  EXPECT_DOUBLE_EQ(betas.front(), 1e-4);
  EXPECT_DOUBLE_EQ(betas.back(), 0.02);
  EXPECT_NEAR(betas[500], 1e-4 + 500 * (0.02 - 1e-4) / 999, 1e-15);
  const std::vector<double> short_betas = diffusion_betas(BetaSchedule::linear, 100);
  EXPECT_DOUBLE_EQ(short_betas.front(), 1e-3);  // scaled by 1000/T
  EXPECT_DOUBLE_EQ(short_betas.back(), 0.2);
}

TEST(GaussianDiffusion, RespacedTimestepsMatchSpaceTimesteps) {
  // Fixtures from IDDPM's space_timesteps(T, [count]) in Python (round half to even).
  const std::vector<int64_t> hundred = respaced_timesteps(1000, 100);
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_EQ(std::vector<int64_t>(hundred.begin(), hundred.begin() + 12),
            (std::vector<int64_t>{0, 10, 20, 30, 40, 50, 61, 71, 81, 91, 101, 111}));
  EXPECT_EQ(std::vector<int64_t>(hundred.end() - 5, hundred.end()),
            (std::vector<int64_t>{959, 969, 979, 989, 999}));
  EXPECT_EQ(respaced_timesteps(1000, 5), (std::vector<int64_t>{0, 250, 500, 749, 999}));
  EXPECT_EQ(respaced_timesteps(7, 5), (std::vector<int64_t>{0, 2, 3, 4, 6}));  // 1.5→2, 4.5→4
  EXPECT_EQ(respaced_timesteps(1000, 2), (std::vector<int64_t>{0, 999}));
  EXPECT_EQ(respaced_timesteps(1000, 1), (std::vector<int64_t>{0}));
  EXPECT_THROW(respaced_timesteps(1000, 0), Error);
  EXPECT_THROW(respaced_timesteps(10, 11), Error);
}

TEST(GaussianDiffusion, RespacedProcessKeepsTheAlphaBarsOfItsTimesteps) {
  const GaussianDiffusion base = GaussianDiffusion::training(BetaSchedule::cosine, 1000);
  const GaussianDiffusion spaced = GaussianDiffusion::respaced(BetaSchedule::cosine, 1000, 100);
  ASSERT_EQ(spaced.size(), 100);
  for (int64_t k = 0; k < spaced.size(); ++k) {
    const int64_t t = spaced.timestep_map()[k];
    EXPECT_NEAR(spaced.alphas_cumprod()[k], base.alphas_cumprod()[t], 1e-12) << k;
  }
  // The tables of one step against their definitions (Ho et al. eq. 7).
  const int64_t k = 37;
  const double beta = spaced.betas()[k];
  const double ab = spaced.alphas_cumprod()[k];
  const double ab_prev = spaced.alphas_cumprod()[k - 1];
  EXPECT_DOUBLE_EQ(spaced.alphas_cumprod_prev()[k], ab_prev);
  EXPECT_NEAR(spaced.posterior_variance()[k], beta * (1 - ab_prev) / (1 - ab), 1e-15);
  EXPECT_NEAR(spaced.posterior_mean_coef1()[k], beta * std::sqrt(ab_prev) / (1 - ab), 1e-12);
  EXPECT_NEAR(spaced.posterior_mean_coef2()[k], (1 - ab_prev) * std::sqrt(1 - beta) / (1 - ab),
              1e-12);
  EXPECT_NEAR(spaced.sqrt_recipm1_alphas_cumprod()[k], std::sqrt(1 / ab - 1), 1e-12);
  // Step 0: the posterior variance is 0, and the clipped log uses step 1's.
  EXPECT_EQ(spaced.posterior_variance()[0], 0.0);
  EXPECT_DOUBLE_EQ(spaced.posterior_log_variance_clipped()[0],
                   std::log(spaced.posterior_variance()[1]));
  EXPECT_DOUBLE_EQ(spaced.fixed_large_log_variance()[0], std::log(spaced.posterior_variance()[1]));
  EXPECT_DOUBLE_EQ(spaced.fixed_large_log_variance()[5], std::log(spaced.betas()[5]));
  // One step: the whole process in a single jump.
  const GaussianDiffusion single = GaussianDiffusion::respaced(BetaSchedule::cosine, 1000, 1);
  EXPECT_EQ(single.size(), 1);
  EXPECT_DOUBLE_EQ(single.alphas_cumprod()[0], base.alphas_cumprod()[0]);
}

}  // namespace
}  // namespace tessera
