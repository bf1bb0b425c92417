// Data preparation, reconstruction metrics against closed forms, and the training config's
// validation. Training itself runs on the Trainer: tests/train/tokenizer_task_test.cpp.

#include "tessera/tokenizer/tokenizer_training.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/tokenizer/patch_tokenizer.h"

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
  config = {};
  config.ema_decay = 1.0;
  EXPECT_THROW(config.validate(), Error);
  config.ema_decay = 0.999;
  EXPECT_NO_THROW(config.validate());
}

}  // namespace
}  // namespace tessera
