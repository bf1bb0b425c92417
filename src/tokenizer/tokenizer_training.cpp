#include "tessera/tokenizer/tokenizer_training.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cmath>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/fashion_mnist.h"
#include "tessera/core/format.h"
#include "tessera/core/image_io.h"
#include "tessera/core/logging.h"
#include "tessera/core/progress.h"
#include "tessera/core/rng.h"
#include "tessera/core/safetensors.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

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

namespace {

nlohmann::json metrics_to_json(const ReconstructionMetrics& metrics) {
  nlohmann::json j;
  j["images"] = metrics.images;
  j["mse"] = metrics.mse;
  j["psnr_db"] = metrics.psnr;
  j["seconds"] = metrics.seconds;
  if (metrics.token_std > 0) {
    j["token_mean"] = metrics.token_mean;
    j["token_std"] = metrics.token_std;
  }
  auto usage_json = [](const CodebookUsage& u) {
    return nlohmann::json{{"codebook_size", u.codebook_size},
                          {"tokens", u.tokens},
                          {"used_codes", u.used_codes},
                          {"used_fraction", u.used_fraction()},
                          {"perplexity", u.perplexity}};
  };
  if (metrics.usage.codebook_size > 0) {
    j["codebook_usage"] = usage_json(metrics.usage);
    j["codebook_usage_per_scale"] = nlohmann::json::array();
    for (const auto& u : metrics.usage_per_scale)
      j["codebook_usage_per_scale"].push_back(usage_json(u));
  }
  return j;
}

// Scales every gradient so that their global L2 norm is at most max_norm.
void clip_gradients(const std::vector<at::Tensor>& parameters, double max_norm) {
  double squared = 0;
  for (const auto& p : parameters) {
    if (p.grad().defined()) squared += p.grad().to(at::kDouble).square().sum().item<double>();
  }
  const double norm = std::sqrt(squared);
  if (norm <= max_norm || norm == 0) return;
  const double scale = max_norm / norm;
  for (const auto& p : parameters) {
    if (p.grad().defined()) p.grad().mul_(scale);
  }
}

}  // namespace

TokenizerTrainResult train_tokenizer(const TokenizerTrainConfig& config) {
  config.validate();
  if (config.threads > 0) at::set_num_threads(static_cast<int>(config.threads));
  const std::filesystem::path out_dir = config.output_dir;
  std::filesystem::create_directories(out_dir);
  write_json_file(out_dir / "config.json", config_to_json(config));

  FashionMnistOptions data_options;
  data_options.directory = config.data.directory;
  const auto load_start = std::chrono::steady_clock::now();
  LabeledImages train_data = load_fashion_mnist(DatasetSplit::train, data_options);
  LabeledImages test_data = load_fashion_mnist(DatasetSplit::test, data_options);
  auto first = [](const at::Tensor& t, int64_t n) { return n > 0 ? t.slice(0, 0, n) : t; };
  train_data.images = first(train_data.images, config.data.train_images);
  test_data.images = first(test_data.images, config.data.eval_images);
  const at::Tensor train_images =
      prepare_fashion_mnist_images(train_data, config.data.image_size, config.data.channels);
  const at::Tensor test_images =
      prepare_fashion_mnist_images(test_data, config.data.image_size, config.data.channels);
  TESSERA_LOG_INFO("tokenizer data: {} training and {} test images of {}x{}x{} in {:.1f} s",
                   train_images.size(0), test_images.size(0), train_images.size(1),
                   train_images.size(2), train_images.size(3), seconds_since(load_start));

  const std::filesystem::path checkpoint_path = out_dir / "tokenizer.safetensors";
  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(config.tokenizer, config.seed);
  int64_t step = 0;
  if (config.resume && std::filesystem::exists(checkpoint_path)) {
    const SafetensorsFile file = SafetensorsFile::open(checkpoint_path);
    tokenizer->load_state_dict(file.all());
    if (auto it = file.metadata().find("tessera.step"); it != file.metadata().end()) {
      step = std::stoll(it->second);
    }
    TESSERA_LOG_INFO("resumed from {} at step {}", checkpoint_path.string(), step);
  }
  // The image size must suit the tokenizer (divisibility, patch_nums): fail before training.
  (void)tokenizer->token_grids(train_images.size(2), train_images.size(3));

  const std::vector<at::Tensor> parameters = tokenizer->parameters();
  int64_t parameter_count = 0;
  for (const auto& p : parameters) parameter_count += p.numel();
  TESSERA_LOG_INFO("tokenizer {}: {} trainable parameters, {} steps of batch {}",
                   tokenizer_kind_name(config.tokenizer.kind), parameter_count, config.steps - step,
                   config.batch_size);

  auto save = [&]() {
    save_tokenizer_checkpoint(checkpoint_path, *tokenizer,
                              {{"tessera.step", std::to_string(step)}});
  };

  TokenizerTrainResult result;
  const auto train_start = std::chrono::steady_clock::now();
  if (!parameters.empty() && step < config.steps) {
    torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(config.learning_rate)
                                                 .betas({config.adam_beta1, config.adam_beta2})
                                                 .weight_decay(config.weight_decay));
    at::Generator batch_generator = make_cpu_generator(derive_seed(config.seed, 1));
    tokenizer->set_training(true);
    ProgressBar progress(config.steps - step, "train-tokenizer");
    double loss_sum = 0;
    int64_t loss_count = 0;
    std::vector<std::pair<std::string, double>> term_sums;
    std::vector<std::pair<std::string, int64_t>> counter_sums;
    while (step < config.steps) {
      const double lr_scale = config.warmup_steps > 0
                                  ? std::min(1.0, static_cast<double>(step + 1) /
                                                      static_cast<double>(config.warmup_steps))
                                  : 1.0;
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::AdamOptions&>(group.options())
            .lr(config.learning_rate * lr_scale);
      }
      const at::Tensor rows = at::randint(train_images.size(0), {config.batch_size},
                                          batch_generator, at::TensorOptions().dtype(at::kLong));
      const at::Tensor batch = train_images.index_select(0, rows).to(tokenizer->device());
      TokenizerTrainingOutput out = tokenizer->training_forward(batch);
      const at::Tensor reconstruction_loss = config.reconstruction_loss == ReconstructionLoss::mse
                                                 ? at::mse_loss(out.reconstruction, batch)
                                                 : at::l1_loss(out.reconstruction, batch);
      const at::Tensor loss = reconstruction_loss + out.regularization;
      TESSERA_CHECK(std::isfinite(loss.item<double>()),
                    "train-tokenizer: the loss became {} at step {} (lower the learning rate?)",
                    loss.item<double>(), step);
      optimizer.zero_grad();
      loss.backward();
      if (config.grad_clip_norm > 0) clip_gradients(parameters, config.grad_clip_norm);
      optimizer.step();
      ++step;

      loss_sum += loss.item<double>();
      ++loss_count;
      if (term_sums.empty()) {
        term_sums.emplace_back("recon", 0.0);
        for (const auto& [name, value] : out.terms) term_sums.emplace_back(name, 0.0);
      }
      term_sums[0].second += reconstruction_loss.item<double>();
      for (size_t i = 0; i < out.terms.size() && i + 1 < term_sums.size(); ++i) {
        term_sums[i + 1].second += out.terms[i].second;
      }
      if (counter_sums.empty()) {
        for (const auto& [name, count] : out.counters) counter_sums.emplace_back(name, 0);
      }
      for (size_t i = 0; i < out.counters.size() && i < counter_sums.size(); ++i) {
        counter_sums[i].second += out.counters[i].second;
      }
      progress.advance();
      if (step % config.log_every == 0 || step == config.steps) {
        std::string line = fmt::format("step {}/{}  loss {:.5f}", step, config.steps,
                                       loss_sum / static_cast<double>(loss_count));
        for (const auto& [name, sum] : term_sums) {
          line += fmt::format("  {} {:.5f}", name, sum / static_cast<double>(loss_count));
        }
        for (const auto& [name, count] : counter_sums) line += fmt::format("  {} {}", name, count);
        if (!out.ids.empty()) {
          at::Tensor all_ids = at::cat(out.ids, 1);
          const auto usage =
              codebook_usage_from_histogram(code_histogram(all_ids, tokenizer->vocab_size()));
          line += fmt::format("  batch codes {}  perplexity {:.1f}", usage.used_codes,
                              usage.perplexity);
        }
        TESSERA_LOG_INFO("{}", line);
        result.final_loss = loss_sum / static_cast<double>(loss_count);
        loss_sum = 0;
        loss_count = 0;
        for (auto& [name, sum] : term_sums) sum = 0;
        for (auto& [name, count] : counter_sums) count = 0;
      }
      if (config.checkpoint_every > 0 && step % config.checkpoint_every == 0) save();
    }
    progress.finish();
    tokenizer->set_training(false);
  }
  result.train_seconds = seconds_since(train_start);
  result.steps = step;
  save();
  result.checkpoint = checkpoint_path;

  result.test = evaluate_reconstruction(*tokenizer, test_images, config.eval_batch_size,
                                        fashion_mnist_region(config.data.image_size));
  TESSERA_LOG_INFO("test reconstructions: {}", format_reconstruction_metrics(result.test));
  if (config.tokenizer.kind == TokenizerKind::kl_vae && result.test.token_std > 0) {
    TESSERA_LOG_INFO("KL-VAE tokens have std {:.4f}; latent_scale {:.4f} would make it 1",
                     result.test.token_std,
                     config.tokenizer.kl_vae_or_default().latent_scale / result.test.token_std);
  }

  nlohmann::json metrics = metrics_to_json(result.test);
  metrics["steps"] = result.steps;
  metrics["train_seconds"] = result.train_seconds;
  metrics["final_train_loss"] = result.final_loss;
  write_json_file(out_dir / "metrics.json", metrics);

  // Eight test images over their reconstructions, twice.
  {
    at::NoGradGuard no_grad;
    const int64_t shown = std::min<int64_t>(16, test_images.size(0));
    const at::Tensor originals = test_images.slice(0, 0, shown);
    const at::Tensor recon = tokenizer->reconstruct(originals).cpu();
    std::vector<at::Tensor> rows;
    for (int64_t begin = 0; begin < shown; begin += 8) {
      const int64_t end = std::min(shown, begin + 8);
      rows.push_back(originals.slice(0, begin, end));
      rows.push_back(recon.slice(0, begin, end));
    }
    write_image_grid(out_dir / "reconstructions.png", at::cat(rows),
                     {.columns = std::min<int64_t>(8, shown),
                      .padding = 2,
                      .pad_value = 128,
                      .upscale = 2,
                      .low = -1.0,
                      .high = 1.0});
  }
  return result;
}

}  // namespace tessera
