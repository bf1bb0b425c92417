#pragma once
// What a tokenizer trains on and how it is measured: the training config of `tessera
// train-tokenizer` (TokenizerTrainConfig), Fashion-MNIST prepared as the tokenizers see it, and
// reconstruction metrics.
//
// Images are Fashion-MNIST's 28x28 greys mapped to [−1, 1] and padded with −1 (black, the
// background) to data.image_size (32: divisible by 4, 8, 16); with data.channels 3 the grey is
// repeated into three channels. Reconstruction metrics are measured on the original 28x28 area
// only, so that the constant padding does not flatter them.
//
// The training loop itself is the shared Trainer: train_tokenizer (train/tokenizer_task.h) runs a
// TokenizerTask through it (loss = reconstruction (MSE or L1 in [−1, 1]) + the tokenizer's
// regularisation), so this module does not depend on the train module.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/data/labeled_images.h"
#include "tessera/tokenizer/codebook_usage.h"
#include "tessera/tokenizer/tokenizer.h"

namespace tessera {
/// The pixel loss a tokenizer trains with.
enum class ReconstructionLoss { mse, l1 };

template <>
struct ConfigEnum<ReconstructionLoss> {  /// Each value with its name.
  static constexpr std::pair<ReconstructionLoss, const char*> values[] = {
      {ReconstructionLoss::mse, "mse"}, {ReconstructionLoss::l1, "l1"}};
};  ///< The names of ReconstructionLoss values in JSON configs.

struct TokenizerDataConfig {
  std::string dataset = "fashion_mnist";  ///< the only dataset so far
  std::string directory = "";  ///< empty: $TESSERA_FASHION_MNIST_DIR, then the Debian folder
  int64_t image_size = 32;     ///< 28x28 images are padded (centred) to this size
  int64_t channels = 1;        ///< 1, or 3 (grey repeated)
  int64_t train_images = 0;    ///< use the first N training images; 0: all 60000
  int64_t eval_images = 0;     ///< evaluate on the first N test images; 0: all 10000

  template <class Visitor>
  void visit(Visitor& v) {
    v("dataset", dataset);
    v("directory", directory);
    v("image_size", image_size);
    v("channels", channels);
    v("train_images", train_images);
    v("eval_images", eval_images);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< The images train_tokenizer (train/tokenizer_task.h) trains and evaluates on.

struct TokenizerTrainConfig {
  TokenizerConfig tokenizer{};  ///< the tokenizer
  TokenizerDataConfig data{};  ///< the images
  int64_t steps = 2000;  ///< optimizer steps
  int64_t batch_size = 64;  ///< images per step
  double learning_rate = 2e-4;  ///< Adam's peak learning rate (the Trainer's AdamW)
  int64_t warmup_steps = 0;  ///< linear warm-up of the learning rate from 0, then constant
  double adam_beta1 = 0.9;  ///< Adam's β1
  double adam_beta2 = 0.95;  ///< Adam's β2
  /// Decoupled (AdamW) weight decay; biases and normalisation gains get none.
  double weight_decay = 0.0;
  double grad_clip_norm = 0.0;  ///< clip the global gradient norm to this; 0 disables
  ReconstructionLoss reconstruction_loss = ReconstructionLoss::mse;  ///< mse or l1
  /// Keep an exponential moving average of the parameters with this decay (e.g. 0.999) and write
  /// it as tokenizer.safetensors; 0 (the default) keeps no average and writes the trained weights.
  double ema_decay = 0.0;
  bool ema_warmup = false;  ///< smaller EMA decay over the first updates (train/ema.h)
  int64_t log_every = 50;  ///< steps between metrics.jsonl lines
  int64_t checkpoint_every = 500;  ///< steps between training checkpoints; 0: only at the end
  int64_t eval_batch_size = 250;  ///< images per evaluation batch
  std::string output_dir = "out/tokenizer";  ///< checkpoints and weights go here
  uint64_t seed = 0;  ///< initialisation and data order
  int64_t threads = 0;  ///< intra-op threads; 0 keeps LibTorch's default
  /// Continue from output_dir/checkpoint.safetensors (the Trainer's whole training state) if it
  /// exists; otherwise start from step 0.
  bool resume = false;

  template <class Visitor>
  void visit(Visitor& v) {
    v("tokenizer", tokenizer);
    v("data", data);
    v("steps", steps);
    v("batch_size", batch_size);
    v("learning_rate", learning_rate);
    v("warmup_steps", warmup_steps);
    v("adam_beta1", adam_beta1);
    v("adam_beta2", adam_beta2);
    v("weight_decay", weight_decay);
    v("grad_clip_norm", grad_clip_norm);
    v("reconstruction_loss", reconstruction_loss);
    v("ema_decay", ema_decay);
    v("ema_warmup", ema_warmup);
    v("log_every", log_every);
    v("checkpoint_every", checkpoint_every);
    v("eval_batch_size", eval_batch_size);
    v("output_dir", output_dir);
    v("seed", seed);
    v("threads", threads);
    v("resume", resume);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< What train_tokenizer (train/tokenizer_task.h) trains, how, on what data.

/// Where in the image reconstruction metrics are measured (all of it when height or width is 0).
struct ImageRegion {
  int64_t top = 0;  ///< first row
  int64_t left = 0;  ///< first column
  int64_t height = 0;  ///< rows (0: all)
  int64_t width = 0;  ///< columns (0: all)
};

struct ReconstructionMetrics {
  int64_t images = 0;  ///< images measured
  /// Mean squared error with pixels on [0, 1], over every pixel and channel of the region.
  double mse = 0;
  /// Peak signal-to-noise ratio, 10·log10(1 / MSE_i) per image (pixels on [0, 1]), averaged.
  double psnr = 0;
  /// Discrete tokenizers: usage of the codebook over all evaluated images, per scale and overall.
  std::vector<CodebookUsage> usage_per_scale{};
  CodebookUsage usage{};  ///< over all scales
  /// Continuous tokenizers: mean and standard deviation of the token values. A KL-VAE's tokens are
  /// meant to have a standard deviation near 1 (MAR chose its scale factor 0.2325 that way), so
  /// latent_scale / token_std is the scale that would give unit deviation.
  double token_mean = 0;
  double token_std = 0;  ///< see token_mean
  double seconds = 0;  ///< wall time of the evaluation
};  ///< Reconstruction quality of a tokenizer on a set of images.

/// A multi-line human-readable summary.
std::string format_reconstruction_metrics(const ReconstructionMetrics& metrics);

/// Fashion-MNIST images as float [N, channels, image_size, image_size] in [−1, 1], padded with −1.
at::Tensor prepare_fashion_mnist_images(const LabeledImages& data, int64_t image_size,
                                        int64_t channels);
/// The 28x28 area of a prepared image.
ImageRegion fashion_mnist_region(int64_t image_size);

/// Reconstructs `images` ([N, C, H, W] in [−1, 1]) batch by batch through encode and decode (in
/// evaluation mode, without autograd) and measures the region.
ReconstructionMetrics evaluate_reconstruction(Tokenizer& tokenizer, const at::Tensor& images,
                                              int64_t batch_size, const ImageRegion& region = {});

}  // namespace tessera
