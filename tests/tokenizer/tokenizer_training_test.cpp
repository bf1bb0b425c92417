// Data preparation, reconstruction metrics against closed forms, and a tiny end-to-end
// train_tokenizer run on Fashion-MNIST (a missing data set skips it: common/prerequisite.h).

#include "tessera/tokenizer/tokenizer_training.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "common/prerequisite.h"
#include "tessera/core/error.h"
#include "tessera/core/fashion_mnist.h"
#include "tessera/tokenizer/patch_tokenizer.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

TEST(TokenizerTraining, FashionMnistImagesArePaddedCentredWithBlack) {
  LabeledImages data;
  data.images = at::full({2, 1, 28, 28}, 255, at::kByte);
  data.labels = at::zeros({2}, at::kLong);
  const at::Tensor images = prepare_fashion_mnist_images(data, 32, 3);
  EXPECT_EQ(images.sizes(), (at::IntArrayRef{2, 3, 32, 32}));
  EXPECT_EQ(images.scalar_type(), at::kFloat);
  // White (255 -> 1) inside rows/columns 2..29, black (-1) padding around.
  EXPECT_EQ(images[1][2][2][2].item<float>(), 1.0f);
  EXPECT_EQ(images[1][2][29][29].item<float>(), 1.0f);
  EXPECT_EQ(images[0][0][1][5].item<float>(), -1.0f);
  EXPECT_EQ(images[0][0][30][5].item<float>(), -1.0f);
  EXPECT_EQ(images[0][1][5][31].item<float>(), -1.0f);
  EXPECT_EQ(images.sum().item<double>(), 2 * 3 * (28.0 * 28.0 - (32.0 * 32.0 - 28.0 * 28.0)));
  const ImageRegion region = fashion_mnist_region(32);
  EXPECT_EQ(region.top, 2);
  EXPECT_EQ(region.height, 28);
}

TEST(TokenizerTraining, MetricsMatchClosedForms) {
  // The identity tokenizer reconstructs [-1, 1] images exactly, and clamps anything outside:
  // images at 1.5 come back as 1.0, an error of 0.25 on the [0, 1] scale, so
  // MSE = 0.0625 and PSNR = 10·log10(1 / 0.0625) = 12.0412 dB.
  PatchTokenizer identity({.image_channels = 1, .patch_size = 2});
  const at::Tensor exact = at::rand({5, 1, 8, 8}) * 2 - 1;
  const ReconstructionMetrics perfect = evaluate_reconstruction(identity, exact, 2);
  EXPECT_EQ(perfect.images, 5);
  EXPECT_EQ(perfect.mse, 0.0);
  EXPECT_NEAR(perfect.psnr, 100.0, 1e-9);  // capped
  at::Tensor bright = at::full({4, 1, 8, 8}, 1.5f);
  const ReconstructionMetrics clipped = evaluate_reconstruction(identity, bright, 3);
  EXPECT_NEAR(clipped.mse, 0.0625, 1e-12);
  EXPECT_NEAR(clipped.psnr, 10.0 * std::log10(16.0), 1e-9);
  // Only the region counts: brightness outside it is ignored.
  at::Tensor mixed = exact.clone();
  mixed.slice(2, 0, 2).fill_(1.5f);
  const ReconstructionMetrics cropped =
      evaluate_reconstruction(identity, mixed, 5, {.top = 2, .left = 0, .height = 6, .width = 8});
  EXPECT_EQ(cropped.mse, 0.0);
}

TEST(TokenizerTraining, TrainConfigValidation) {
  TokenizerTrainConfig config;
  config.batch_size = 0;
  EXPECT_THROW(config.validate(), Error);
  config = {};
  config.data.channels = 2;
  EXPECT_THROW(config.validate(), Error);
  config = {};
  config.data.image_size = 24;
  EXPECT_THROW(config.validate(), Error);
}

TEST(TokenizerTraining, TinyEndToEndRunWritesCheckpointAndMetrics) {
  if (!std::filesystem::exists(default_fashion_mnist_directory() / "train-images-idx3-ubyte.gz")) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << default_fashion_mnist_directory()
                                                 << " (set TESSERA_FASHION_MNIST_DIR)");
  }
  const auto out_dir = std::filesystem::temp_directory_path() /
                       ("tessera-train-tokenizer-test-" + std::to_string(::getpid()));
  TokenizerTrainConfig config;
  config.tokenizer.kind = TokenizerKind::multiscale_vq_vae;
  MultiScaleVqVaeConfig ms;
  ms.autoencoder.image_channels = 1;
  ms.autoencoder.base_channels = 8;
  ms.autoencoder.channel_multipliers = {1, 2, 2};
  ms.autoencoder.res_blocks_per_level = 1;
  ms.autoencoder.lowest_level_attention = false;
  ms.autoencoder.middle_attention = false;
  ms.autoencoder.latent_channels = 4;
  ms.autoencoder.norm_groups = 4;
  ms.quantizer.codebook_size = 16;
  ms.quantizer.patch_nums = {1, 2, 4, 8};
  config.tokenizer.multiscale_vq_vae = ms;
  config.data.train_images = 64;
  config.data.eval_images = 20;
  config.steps = 4;
  config.batch_size = 4;
  config.log_every = 2;
  config.checkpoint_every = 2;
  config.eval_batch_size = 8;
  config.output_dir = out_dir.string();
  config.threads = 0;

  const TokenizerTrainResult result = train_tokenizer(config);
  EXPECT_EQ(result.steps, 4);
  EXPECT_EQ(result.test.images, 20);
  EXPECT_GT(result.test.psnr, 0.0);
  ASSERT_EQ(result.test.usage_per_scale.size(), 4u);
  EXPECT_EQ(result.test.usage_per_scale[0].tokens, 20);
  EXPECT_EQ(result.test.usage.tokens, 20 * (1 + 4 + 16 + 64));
  for (const char* file :
       {"config.json", "metrics.json", "reconstructions.png", "tokenizer.safetensors"}) {
    EXPECT_TRUE(std::filesystem::exists(out_dir / file)) << file;
  }
  // The checkpoint reloads into the trained configuration, and resuming continues from step 4.
  const auto reloaded = load_tokenizer_checkpoint(out_dir / "tokenizer.safetensors");
  EXPECT_EQ(reloaded->config().kind, TokenizerKind::multiscale_vq_vae);
  config.resume = true;
  config.steps = 5;
  EXPECT_EQ(train_tokenizer(config).steps, 5);
  std::error_code ignored;
  std::filesystem::remove_all(out_dir, ignored);
}

}  // namespace
}  // namespace tessera
