// The continuous tokenizers: the KL-VAE's Gaussian latent, KL term, scale factor and token layout,
// and the identity patch tokenizer.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/tokenizer/kl_vae.h"
#include "tessera/tokenizer/patch_tokenizer.h"

namespace tessera {
namespace {

KlVaeConfig tiny_kl_config() {
  KlVaeConfig config;
  auto& ae = config.autoencoder;
  ae.image_channels = 1;
  ae.base_channels = 8;
  ae.channel_multipliers = {1, 2};
  ae.res_blocks_per_level = 1;
  ae.lowest_level_attention = false;
  ae.middle_attention = true;
  ae.latent_channels = 4;
  ae.norm_groups = 4;
  config.token_channels = 3;
  config.kl_weight = 1e-3;
  config.latent_scale = 0.5;
  return config;
}

TEST(DiagonalGaussian, KlMatchesClosedForm) {
  // One element per batch row: KL(N(m, e^v) ‖ N(0, 1)) = 0.5 (m² + e^v − 1 − v).
  const at::Tensor moments = at::tensor({0.5f, -1.0f, 2.0f, 0.3f}).view({2, 2, 1, 1});
  const auto q = DiagonalGaussian::from_moments(moments);
  const at::Tensor kl = q.kl_to_standard_normal();
  EXPECT_NEAR(kl[0].item<double>(), 0.5 * (0.25 + std::exp(-1.0) - 1.0 + 1.0), 1e-6);
  EXPECT_NEAR(kl[1].item<double>(), 0.5 * (4.0 + std::exp(0.3) - 1.0 - 0.3), 1e-6);
  // A standard normal has zero KL.
  EXPECT_NEAR(DiagonalGaussian::from_moments(at::zeros({1, 6, 2, 2}))
                  .kl_to_standard_normal()
                  .item<double>(),
              0.0, 1e-7);
}

TEST(DiagonalGaussian, LogVarianceIsClampedAndSamplesUseTheGenerator) {
  const auto q = DiagonalGaussian::from_moments(at::tensor({1.0f, 100.0f}).view({1, 2, 1, 1}));
  EXPECT_EQ(q.log_variance.item<float>(), 20.0f);
  // mean + std·ε, with ε the generator's first standard normal.
  const auto p =
      DiagonalGaussian::from_moments(at::tensor({1.0f, std::log(4.0f)}).view({1, 2, 1, 1}));
  const at::Tensor eps = at::randn({1, 1, 1, 1}, make_cpu_generator(11), at::TensorOptions());
  EXPECT_NEAR(p.sample(make_cpu_generator(11)).item<double>(), 1.0 + 2.0 * eps.item<double>(),
              1e-5);
}

TEST(KlVae, TokensAreScaledPosteriorMeansInRasterOrder) {
  KlVae model(tiny_kl_config(), /*seed=*/4);
  const at::Tensor images = at::rand({2, 1, 8, 8}) * 2 - 1;
  const Tokens tokens = model.encode(images);
  ASSERT_EQ(tokens.num_scales(), 1);
  EXPECT_FALSE(tokens.discrete());
  EXPECT_EQ(tokens.grids[0], (TokenGridSize{4, 4}));
  EXPECT_EQ(tokens.scales[0].sizes(), (at::IntArrayRef{2, 16, 3}));
  const at::Tensor mean = model.encode_posterior(images).mean;  // [2, 3, 4, 4]
  // Token (b, y·4 + x, c) = scale · mean[b, c, y, x].
  EXPECT_NEAR(tokens.scales[0][1][2 * 4 + 3][2].item<double>(),
              0.5 * mean[1][2][2][3].item<double>(), 1e-6);
  EXPECT_EQ(model.decode(tokens).sizes(), images.sizes());
}

TEST(KlVae, TrainingRegularisationIsWeightedMeanKl) {
  KlVae model(tiny_kl_config(), /*seed=*/4);
  const at::Tensor images = at::rand({2, 1, 8, 8}) * 2 - 1;
  const double kl = model.encode_posterior(images).kl_to_standard_normal().mean().item<double>();
  const TokenizerTrainingOutput out = model.training_forward(images);
  EXPECT_NEAR(out.regularization.item<double>(), 1e-3 * kl, 1e-6 * kl);
  out.regularization.backward();
  EXPECT_GT(model.state_dict().at("quant_conv.weight").grad().abs().sum().item<double>(), 0);
}

TEST(KlVae, RejectsBadInput) {
  KlVae model(tiny_kl_config());
  EXPECT_THROW((void)model.encode(at::zeros({1, 1, 9, 8})), Error);  // not divisible by 2
  EXPECT_THROW((void)model.encode(at::zeros({1, 3, 8, 8})), Error);  // 3 channels, expects 1
  Tokens wrong_width{{at::zeros({1, 16, 5})}, {{4, 4}}};
  EXPECT_THROW((void)model.decode(wrong_width), Error);
  Tokens ids{{at::zeros({1, 16}, at::kLong)}, {{4, 4}}};
  EXPECT_THROW((void)model.decode(ids), Error);
}

TEST(PatchTokenizer, PatchifyLayoutAndExactInverse) {
  PatchTokenizer tokenizer({.image_channels = 3, .patch_size = 2});
  const at::Tensor images = at::rand({2, 3, 4, 6}) * 2 - 1;
  const Tokens tokens = tokenizer.encode(images);
  EXPECT_EQ(tokens.grids[0], (TokenGridSize{2, 3}));
  EXPECT_EQ(tokens.scales[0].sizes(), (at::IntArrayRef{2, 6, 12}));
  // Token (b, i·w + j) holds value (c, di, dj) at index c·p·p + di·p + dj.
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t di = 0; di < 2; ++di) {
      for (int64_t dj = 0; dj < 2; ++dj) {
        EXPECT_EQ(tokens.scales[0][1][1 * 3 + 2][c * 4 + di * 2 + dj].item<float>(),
                  images[1][c][1 * 2 + di][2 * 2 + dj].item<float>());
      }
    }
  }
  EXPECT_TRUE(at::equal(tokenizer.decode(tokens), images));
  EXPECT_THROW((void)tokenizer.encode(at::zeros({1, 3, 5, 6})), Error);
}

}  // namespace
}  // namespace tessera
