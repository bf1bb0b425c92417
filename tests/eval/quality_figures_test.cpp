// The figures the quality check compares (docs/evaluation.md, "The quality check"): FID-FM's
// bootstrap standard error against the spread of FID over independent samples, drawn here
// (Monte Carlo) and predicted by the delta method in closed form; and the samples' digest
// against zlib's CRC-32 as Python's zlib computes it.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/eval/evaluation.h"
#include "tessera/eval/frechet_distance.h"
#include "tessera/eval/generator_evaluation.h"

namespace tessera {
namespace {

// 1-D features: FID against N(0, 1) of a sample from N(μ, σ²) is (m − 0)² + (s − 1)², with m, s
// the sample's mean and standard deviation.
constexpr double kMean = 1.0;
constexpr double kStd = 2.0;
constexpr int64_t kSamples = 1000;

GaussianStats standard_normal_reference() {
  return {at::zeros({1}, at::kDouble), at::ones({1, 1}, at::kDouble), 0};
}

TEST(FidStandardError, BootstrapMatchesTheSpreadOverIndependentSamples) {
  const GaussianStats reference = standard_normal_reference();
  at::Generator g = make_cpu_generator(11);
  // The truth: FID over 400 independent sets of kSamples, in float64.
  std::vector<double> fids;
  for (int i = 0; i < 400; ++i) {
    const at::Tensor x = at::randn({kSamples, 1}, g, at::kDouble) * kStd + kMean;
    fids.push_back(frechet_distance(fit_gaussian(x), reference));
  }
  const at::Tensor spread = at::tensor(fids, at::kDouble);
  const double monte_carlo = spread.std().item<double>();
  // Delta method: Var m = σ²/N, Var s ≈ σ²/(2N), gradient (2(μ − 0), 2(σ − 1)).
  const double delta = std::sqrt(4 * kMean * kMean * kStd * kStd / kSamples +
                                 4 * (kStd - 1) * (kStd - 1) * kStd * kStd / (2.0 * kSamples));
  EXPECT_NEAR(monte_carlo / delta, 1.0, 0.1) << "the Monte Carlo spread is the reference";
  // One set's bootstrap estimate, as the quality check uses it: within 20 % of the truth (the
  // bootstrap's own relative error at N = 1000 and 200 resamples is about 5 %, the sample's
  // about 3 %).
  const at::Tensor one_set = at::randn({kSamples, 1}, g, at::kDouble) * kStd + kMean;
  const double bootstrap = fid_fm_bootstrap_standard_error(one_set, reference);
  EXPECT_NEAR(bootstrap / monte_carlo, 1.0, 0.2)
      << "bootstrap " << bootstrap << ", Monte Carlo " << monte_carlo;
  // Reproducible: the resamples come from the given seed.
  EXPECT_EQ(bootstrap, fid_fm_bootstrap_standard_error(one_set, reference));
  EXPECT_NE(bootstrap, fid_fm_bootstrap_standard_error(one_set, reference, 200, 1));
}

TEST(FidStandardError, ShrinksAsOneOverRootN) {
  // Four times the samples, half the standard error (within the estimates' noise).
  const GaussianStats reference = standard_normal_reference();
  at::Generator g = make_cpu_generator(12);
  const at::Tensor small = at::randn({1000, 1}, g, at::kDouble) * kStd + kMean;
  const at::Tensor large = at::randn({4000, 1}, g, at::kDouble) * kStd + kMean;
  const double ratio = fid_fm_bootstrap_standard_error(small, reference) /
                       fid_fm_bootstrap_standard_error(large, reference);
  EXPECT_NEAR(ratio, 2.0, 0.4);
}

TEST(FidStandardError, RefusesTooFewRowsOrResamples) {
  const GaussianStats reference = standard_normal_reference();
  EXPECT_THROW(fid_fm_bootstrap_standard_error(at::zeros({1, 1}), reference), Error);
  EXPECT_THROW(fid_fm_bootstrap_standard_error(at::zeros({8}), reference), Error);
  EXPECT_THROW(fid_fm_bootstrap_standard_error(at::zeros({8, 1}), reference, 1), Error);
}

TEST(SamplesDigest, IsZlibCrc32OfTheImagesThenTheLabels) {
  // Expected values from Python: '%08x' % zlib.crc32(bytes(12)), and of
  // struct.pack('<4f', 0.5, -1.0, 0.25, 1.0) + struct.pack('<2q', 3, 7).
  BulkSamples zeros;
  zeros.images = at::zeros({1, 1, 1, 1});
  zeros.labels = at::zeros({1}, at::kLong);
  EXPECT_EQ(samples_digest(zeros), "7bd5c66f");
  BulkSamples two;
  two.images = at::tensor({0.5f, -1.0f, 0.25f, 1.0f}).reshape({2, 1, 1, 2});
  two.labels = at::tensor({3, 7}, at::kLong);
  EXPECT_EQ(samples_digest(two), "d20d4e96");
  // One ulp in one pixel changes it.
  BulkSamples nudged = two;
  nudged.images = two.images.clone();
  nudged.images.view(-1)[2] = std::nextafter(0.25f, 1.0f);
  EXPECT_NE(samples_digest(nudged), samples_digest(two));
}

}  // namespace
}  // namespace tessera
