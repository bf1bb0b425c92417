// The single-scale vector quantiser against hand-computed values: nearest codes, the
// straight-through gradient, the loss terms, the EMA update formula, L2-normalised codes and
// dead-code restarts.

#include "tessera/tokenizer/vector_quantizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/core/error.h"

namespace tessera {
namespace {

// Four 2-d codes at the corners of a square.
at::Tensor square_codebook() {
  return at::tensor({1.0f, 1.0f, -1.0f, 1.0f, -1.0f, -1.0f, 1.0f, -1.0f}).view({4, 2});
}

// z [1, 2, 1, 3]: three latent vectors, each nearest to a known code.
at::Tensor three_latents() {
  // Vectors (0.9, 0.8) -> code 0, (-0.7, -0.2) -> code 2, (0.3, -0.9) -> code 3.
  return at::tensor({0.9f, -0.7f, 0.3f, 0.8f, -0.2f, -0.9f}).view({1, 2, 1, 3});
}

VectorQuantizerConfig small_config() {
  VectorQuantizerConfig config;
  config.codebook_size = 4;
  config.code_dim = 2;
  config.commitment_weight = 0.25;
  return config;
}

TEST(VectorQuantizer, PicksNearestCodes) {
  VectorQuantizer quantizer(small_config());
  quantizer.set_codebook(square_codebook());
  const auto out = quantizer.forward(three_latents());
  EXPECT_TRUE(at::equal(out.ids, at::tensor({0, 2, 3}, at::kLong).view({1, 3})));
  // The forward value is the codes themselves.
  const at::Tensor expected =
      at::tensor({1.0f, -1.0f, 1.0f, 1.0f, -1.0f, -1.0f}).view({1, 2, 1, 3});
  EXPECT_TRUE(at::allclose(out.quantized, expected, 0, 1e-6));
}

TEST(VectorQuantizer, StraightThroughGradientIsIdentity) {
  VectorQuantizer quantizer(small_config());
  quantizer.set_codebook(square_codebook());
  const at::Tensor z = three_latents().clone().set_requires_grad(true);
  const auto out = quantizer.forward(z);
  const at::Tensor upstream = at::randn(out.quantized.sizes(), at::kFloat);
  out.quantized.backward(upstream);
  ASSERT_TRUE(z.grad().defined());
  EXPECT_TRUE(at::allclose(z.grad(), upstream, 0, 1e-7));
}

TEST(VectorQuantizer, LossTermsMatchTheirDefinitions) {
  VectorQuantizer quantizer(small_config());
  quantizer.set_codebook(square_codebook());
  const auto out = quantizer.forward(three_latents());
  // Squared distances to the chosen codes, summed over the 2 dims, averaged over 3·2 values.
  const double d0 = 0.1 * 0.1 + 0.2 * 0.2, d1 = 0.3 * 0.3 + 0.8 * 0.8, d2 = 0.7 * 0.7 + 0.1 * 0.1;
  const double mse = (d0 + d1 + d2) / 6.0;
  EXPECT_NEAR(out.commitment_loss, mse, 1e-6);
  EXPECT_NEAR(out.codebook_loss, mse, 1e-6);
  EXPECT_NEAR(out.loss.item<double>(), mse * (1.0 + 0.25), 1e-6);
}

TEST(VectorQuantizer, CodebookGradientPullsCodesTowardsLatents) {
  VectorQuantizer quantizer(small_config());
  quantizer.set_codebook(square_codebook());
  quantizer.set_training(true);
  const auto out = quantizer.forward(three_latents());
  out.loss.backward();
  const auto parameters = quantizer.parameters();
  ASSERT_EQ(parameters.size(), 1u);
  // d/de of codebook_weight · Σ (e − z)² / 6 over the assigned latents = 2 (e − z) / 6.
  const at::Tensor grad = parameters[0].grad();
  EXPECT_NEAR(grad[0][0].item<double>(), 2 * (1.0 - 0.9) / 6, 1e-6);
  EXPECT_NEAR(grad[0][1].item<double>(), 2 * (1.0 - 0.8) / 6, 1e-6);
  EXPECT_NEAR(grad[3][1].item<double>(), 2 * (-1.0 + 0.9) / 6, 1e-6);
  EXPECT_EQ(grad[1].abs().sum().item<double>(), 0.0);  // code 1 is unused
}

TEST(VectorQuantizer, EmaUpdateFollowsTheFormula) {
  VectorQuantizerConfig config = small_config();
  config.codebook_update = CodebookUpdate::ema;
  config.ema_decay = 0.9;
  config.ema_epsilon = 1e-5;
  VectorQuantizer quantizer(config);
  EXPECT_TRUE(quantizer.parameters().empty());  // an EMA codebook is not trained by gradient
  const at::Tensor initial = square_codebook().to(at::kDouble);
  quantizer.set_codebook(square_codebook());
  quantizer.set_training(true);
  const auto out = quantizer.forward(three_latents());
  EXPECT_EQ(out.codebook_loss, 0.0);

  // By hand: counts start at 1 and sums at the codes; codes 0, 2, 3 get one vector each.
  const double d = 0.9, eps = 1e-5;
  const double n[4] = {d + (1 - d), d, d + (1 - d), d + (1 - d)};
  const double z[4][2] = {{0.9, 0.8}, {0, 0}, {-0.7, -0.2}, {0.3, -0.9}};
  const double total = n[0] + n[1] + n[2] + n[3];
  const at::Tensor codebook = quantizer.codebook().to(at::kDouble);
  for (int k = 0; k < 4; ++k) {
    const double smoothed = (n[k] + eps) / (total + 4 * eps) * total;
    for (int c = 0; c < 2; ++c) {
      const double sum = d * initial[k][c].item<double>() + (1 - d) * z[k][c];
      EXPECT_NEAR(codebook[k][c].item<double>(), sum / smoothed, 1e-6) << "code " << k;
    }
  }
}

TEST(VectorQuantizer, L2NormalisedCodesUseCosineSimilarity) {
  VectorQuantizerConfig config = small_config();
  config.l2_normalized_codes = true;
  VectorQuantizer quantizer(config);
  // Code 0 is long but points along x; code 1 is short and points along y.
  quantizer.set_codebook(
      at::tensor({10.0f, 0.0f, 0.0f, 0.1f, -1.0f, 0.0f, 0.0f, -1.0f}).view({4, 2}));
  // (0.2, 0.9): Euclidean-nearest would be code 1 ... and so is cosine; (3, 1): cosine → code 0,
  // Euclidean (to (10,0) vs (0,0.1)) → code 1. Cosine must win.
  const at::Tensor z = at::tensor({0.2f, 3.0f, 0.9f, 1.0f}).view({1, 2, 1, 2});
  const auto out = quantizer.forward(z);
  EXPECT_TRUE(at::equal(out.ids, at::tensor({1, 0}, at::kLong).view({1, 2})));
  const at::Tensor norms = quantizer.codebook().norm(2, {1});
  EXPECT_TRUE(at::allclose(norms, at::ones({4}), 0, 1e-6));
  // The returned codes are the unit codes.
  EXPECT_NEAR(out.quantized[0][1][0][0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(out.quantized[0][0][0][1].item<double>(), 1.0, 1e-6);
}

TEST(VectorQuantizer, DeadCodesRestartFromBatchVectors) {
  VectorQuantizerConfig config = small_config();
  config.dead_code_restart.interval = 2;
  config.dead_code_restart.min_hits = 0.5;
  config.dead_code_restart.hit_decay = 0.5;
  VectorQuantizer quantizer(config, /*seed=*/3);
  quantizer.set_codebook(square_codebook());
  quantizer.set_training(true);
  // Every vector is nearest to code 0; codes 1..3 are never hit.
  const at::Tensor z = at::tensor({0.9f, 1.1f, 0.8f, 1.2f, 0.95f, 1.05f}).view({1, 2, 1, 3});
  const auto first = quantizer.forward(z);
  EXPECT_EQ(first.restarted_codes, 0);  // not yet time to check
  // Hits EMA after one step: 0.5·0 + 0.5·hits.
  EXPECT_TRUE(at::allclose(quantizer.code_hits_ema(), at::tensor({1.5f, 0.0f, 0.0f, 0.0f})));
  const auto second = quantizer.forward(z);
  EXPECT_EQ(second.restarted_codes, 3);
  const at::Tensor codebook = quantizer.codebook();
  EXPECT_TRUE(at::equal(codebook[0], square_codebook()[0]));  // the live code is untouched
  const at::Tensor vectors = z.permute({0, 2, 3, 1}).reshape({3, 2});
  for (int k = 1; k < 4; ++k) {
    // Each restarted code is one of the batch's vectors.
    const at::Tensor distances = (vectors - codebook[k]).abs().sum(1);
    EXPECT_NEAR(distances.min().item<double>(), 0.0, 1e-7) << "code " << k;
  }
}

TEST(VectorQuantizer, LookupRejectsIdsOutsideTheCodebook) {
  VectorQuantizer quantizer(small_config());
  EXPECT_THROW((void)quantizer.lookup(at::tensor({0, 4}, at::kLong).view({1, 1, 2})), Error);
  EXPECT_THROW((void)quantizer.lookup(at::tensor({-1, 0}, at::kLong).view({1, 1, 2})), Error);
  EXPECT_EQ(quantizer.lookup(at::tensor({3, 0}, at::kLong).view({1, 1, 2})).sizes(),
            (at::IntArrayRef{1, 2, 1, 2}));
}

TEST(VectorQuantizer, RejectsLatentsOfTheWrongWidth) {
  VectorQuantizer quantizer(small_config());
  EXPECT_THROW((void)quantizer.forward(at::zeros({1, 3, 2, 2})), Error);
}

}  // namespace
}  // namespace tessera
