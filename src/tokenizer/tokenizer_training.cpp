#include "tessera/tokenizer/tokenizer_training.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

namespace {

constexpr int64_t kFashionMnistSide = 28;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

at::Tensor crop(const at::Tensor& images, const ImageRegion& region) {
  if (region.height <= 0 || region.width <= 0) return images;
  return images.slice(2, region.top, region.top + region.height)
      .slice(3, region.left, region.left + region.width);
}

}  // namespace

void TokenizerDataConfig::validate() const {
  TESSERA_CHECK(dataset == "fashion_mnist",
                "data.dataset: only 'fashion_mnist' is supported, got '{}'", dataset);
  TESSERA_CHECK(image_size >= kFashionMnistSide,
                "data.image_size must be at least {} (images are padded, never cropped), got {}",
                kFashionMnistSide, image_size);
  TESSERA_CHECK(channels == 1 || channels == 3, "data.channels must be 1 or 3, got {}", channels);
  TESSERA_CHECK(train_images >= 0 && eval_images >= 0,
                "data.train_images and data.eval_images must be >= 0 (0: all)");
}

void TokenizerTrainConfig::validate() const {
  tokenizer.validate();
  data.validate();
  TESSERA_CHECK(steps >= 0, "steps must be >= 0, got {}", steps);
  TESSERA_CHECK(batch_size > 0, "batch_size must be positive, got {}", batch_size);
  TESSERA_CHECK(learning_rate > 0, "learning_rate must be positive, got {}", learning_rate);
  TESSERA_CHECK(warmup_steps >= 0, "warmup_steps must be >= 0, got {}", warmup_steps);
  TESSERA_CHECK(adam_beta1 >= 0 && adam_beta1 < 1 && adam_beta2 >= 0 && adam_beta2 < 1,
                "adam_beta1 and adam_beta2 must be in [0, 1), got {} and {}", adam_beta1,
                adam_beta2);
  TESSERA_CHECK(weight_decay >= 0, "weight_decay must be >= 0, got {}", weight_decay);
  TESSERA_CHECK(grad_clip_norm >= 0, "grad_clip_norm must be >= 0, got {}", grad_clip_norm);
  TESSERA_CHECK(ema_decay >= 0 && ema_decay < 1,
                "ema_decay must be in [0, 1) (0: no moving average), got {}", ema_decay);
  TESSERA_CHECK(log_every > 0, "log_every must be positive, got {}", log_every);
  TESSERA_CHECK(checkpoint_every >= 0, "checkpoint_every must be >= 0, got {}", checkpoint_every);
  TESSERA_CHECK(eval_batch_size > 0, "eval_batch_size must be positive, got {}", eval_batch_size);
  TESSERA_CHECK(!output_dir.empty(), "output_dir must not be empty");
  TESSERA_CHECK(threads >= 0, "threads must be >= 0, got {}", threads);
}

at::Tensor prepare_fashion_mnist_images(const LabeledImages& data, int64_t image_size,
                                        int64_t channels) {
  TESSERA_CHECK(data.images.dim() == 4 && data.images.size(1) == 1,
                "prepare_fashion_mnist_images: expected images [N, 1, H, W], got shape {}",
                data.images.sizes());
  const int64_t height = data.images.size(2), width = data.images.size(3);
  TESSERA_CHECK(image_size >= height && image_size >= width,
                "prepare_fashion_mnist_images: image_size {} is smaller than the images ({}x{})",
                image_size, height, width);
  at::Tensor images = data.images;
  if (images.scalar_type() == at::kByte)
    images = convert_pixels(images, PixelRange::minus_one_to_one);
  const int64_t top = (image_size - height) / 2, left = (image_size - width) / 2;
  images = at::constant_pad_nd(
      images, {left, image_size - width - left, top, image_size - height - top}, -1.0);
  if (channels != 1) images = images.expand({-1, channels, -1, -1}).contiguous();
  return images;
}

ImageRegion fashion_mnist_region(int64_t image_size) {
  const int64_t offset = (image_size - kFashionMnistSide) / 2;
  return {offset, offset, kFashionMnistSide, kFashionMnistSide};
}

ReconstructionMetrics evaluate_reconstruction(Tokenizer& tokenizer, const at::Tensor& images,
                                              int64_t batch_size, const ImageRegion& region) {
  TESSERA_CHECK(images.dim() == 4 && images.size(0) > 0,
                "evaluate_reconstruction: expected images [N, C, H, W], got shape {}",
                images.sizes());
  TESSERA_CHECK(batch_size > 0, "evaluate_reconstruction: batch_size must be positive");
  const auto start = std::chrono::steady_clock::now();
  const bool was_training = tokenizer.is_training();
  tokenizer.set_training(false);
  at::NoGradGuard no_grad;
  const int64_t count = images.size(0);
  double squared_error_sum = 0, psnr_sum = 0;
  int64_t values = 0;
  std::vector<at::Tensor> histograms;
  double token_sum = 0, token_square_sum = 0;
  int64_t token_values = 0;
  for (int64_t begin = 0; begin < count; begin += batch_size) {
    const at::Tensor batch = images.slice(0, begin, std::min(count, begin + batch_size));
    const Tokens tokens = tokenizer.encode(batch);
    const at::Tensor recon = tokenizer.decode(tokens).cpu().to(at::kDouble);
    // Pixels on [0, 1]: (x + 1) / 2, so squared errors shrink by 4.
    const at::Tensor diff = (crop(recon, region) - crop(batch.to(at::kDouble), region)) * 0.5;
    const at::Tensor per_image = diff.square().flatten(1).mean(1);
    squared_error_sum += diff.square().sum().item<double>();
    values += diff.numel();
    // An exact reconstruction has infinite PSNR; 1e-10 caps it at 100 dB.
    psnr_sum += (-10.0 * at::log10(per_image.clamp_min(1e-10))).sum().item<double>();
    if (!tokenizer.discrete()) {
      for (const auto& scale : tokens.scales) {
        const at::Tensor t = scale.to(at::kDouble);
        token_sum += t.sum().item<double>();
        token_square_sum += t.square().sum().item<double>();
        token_values += t.numel();
      }
    } else {
      if (histograms.empty()) histograms.resize(tokens.scales.size());
      for (size_t s = 0; s < tokens.scales.size(); ++s) {
        const at::Tensor h = code_histogram(tokens.scales[s], tokenizer.vocab_size());
        histograms[s] = histograms[s].defined() ? histograms[s] + h : h;
      }
    }
  }
  tokenizer.set_training(was_training);
  ReconstructionMetrics metrics;
  metrics.images = count;
  metrics.mse = squared_error_sum / static_cast<double>(values);
  metrics.psnr = psnr_sum / static_cast<double>(count);
  if (token_values > 0) {
    const double n = static_cast<double>(token_values);
    metrics.token_mean = token_sum / n;
    metrics.token_std =
        std::sqrt(std::max(0.0, token_square_sum / n - metrics.token_mean * metrics.token_mean));
  }
  if (!histograms.empty()) {
    at::Tensor total;
    for (const auto& h : histograms) {
      metrics.usage_per_scale.push_back(codebook_usage_from_histogram(h));
      total = total.defined() ? total + h : h;
    }
    metrics.usage = codebook_usage_from_histogram(total);
  }
  metrics.seconds = seconds_since(start);
  return metrics;
}

std::string format_reconstruction_metrics(const ReconstructionMetrics& metrics) {
  std::ostringstream out;
  out << fmt::format("images {}  MSE {:.5f}  PSNR {:.2f} dB  ({:.1f} s)\n", metrics.images,
                     metrics.mse, metrics.psnr, metrics.seconds);
  if (metrics.token_std > 0) {
    out << fmt::format("token mean {:.4f}  std {:.4f}\n", metrics.token_mean, metrics.token_std);
  }
  if (metrics.usage.codebook_size > 0) {
    out << fmt::format("codebook usage {}/{} ({:.1f}%)  perplexity {:.1f}\n",
                       metrics.usage.used_codes, metrics.usage.codebook_size,
                       100.0 * metrics.usage.used_fraction(), metrics.usage.perplexity);
    if (metrics.usage_per_scale.size() > 1) {
      for (size_t s = 0; s < metrics.usage_per_scale.size(); ++s) {
        const auto& u = metrics.usage_per_scale[s];
        out << fmt::format("  scale {}: {} codes used, perplexity {:.1f}\n", s, u.used_codes,
                           u.perplexity);
      }
    }
  }
  return out.str();
}

}  // namespace tessera
