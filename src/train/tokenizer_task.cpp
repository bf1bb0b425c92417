#include "tessera/train/tokenizer_task.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/logging.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/io/image_io.h"
#include "tessera/tokenizer/codebook_usage.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {

TokenizerTask::TokenizerTask(Tokenizer& tokenizer, at::Tensor images,
                             ReconstructionLoss reconstruction_loss)
    : tokenizer_(tokenizer), images_(std::move(images)), reconstruction_loss_(reconstruction_loss) {
  TESSERA_CHECK(images_.defined() && images_.dim() == 4 && images_.size(0) > 0,
                "TokenizerTask: expected images [N, C, H, W] with N > 0");
  (void)tokenizer_.token_grids(images_.size(2), images_.size(3));  // fails early on a bad size
  const std::vector<at::Tensor> trainable = tokenizer_.parameters();
  for (const auto& [name, tensor] : tokenizer_.state_dict()) {
    bool is_parameter = false;
    for (const auto& p : trainable) is_parameter = is_parameter || p.is_same(tensor);
    (is_parameter ? parameters_ : buffers_)[name] = tensor;
  }
  TESSERA_CHECK(parameters_.size() == trainable.size(),
                "TokenizerTask: found {} of the tokenizer's {} parameters in its state dict",
                parameters_.size(), trainable.size());
}

TrainingLoss TokenizerTask::loss(const at::Tensor& indices, at::Generator& /*generator*/) {
  const at::Tensor batch = images_.index_select(0, indices).to(tokenizer_.device());
  TokenizerTrainingOutput out = tokenizer_.training_forward(batch);
  const at::Tensor reconstruction = reconstruction_loss_ == ReconstructionLoss::mse
                                        ? at::mse_loss(out.reconstruction, batch)
                                        : at::l1_loss(out.reconstruction, batch);
  TrainingLoss result;
  result.loss = out.regularization.defined() ? reconstruction + out.regularization : reconstruction;
  result.terms.emplace_back("recon", reconstruction.item<double>());
  for (auto& term : out.terms) result.terms.push_back(std::move(term));
  for (const auto& [name, count] : out.counters) {
    result.terms.emplace_back(name, static_cast<double>(count));
  }
  if (!out.ids.empty()) {
    const CodebookUsage usage = codebook_usage_from_histogram(
        code_histogram(at::cat(out.ids, 1), tokenizer_.vocab_size()));
    result.terms.emplace_back("batch_codes", static_cast<double>(usage.used_codes));
    result.terms.emplace_back("batch_perplexity", usage.perplexity);
  }
  return result;
}

std::map<std::string, std::string> TokenizerTask::metadata() const {
  return {{kTokenizerConfigMetadataKey, config_to_json(tokenizer_.config()).dump()}};
}

TrainerConfig trainer_config_for(const TokenizerTrainConfig& config) {
  TrainerConfig trainer;
  trainer.optimizer.kind = OptimizerKind::adamw;
  trainer.optimizer.learning_rate = config.learning_rate;
  trainer.optimizer.beta1 = config.adam_beta1;
  trainer.optimizer.beta2 = config.adam_beta2;
  trainer.optimizer.eps = 1e-8;
  trainer.optimizer.weight_decay = config.weight_decay;
  trainer.lr_schedule = {
      .kind = LrScheduleKind::constant, .warmup_steps = config.warmup_steps, .min_ratio = 0.0};
  if (config.ema_decay > 0) {
    trainer.ema = {.enabled = true, .decay = config.ema_decay, .warmup = config.ema_warmup};
  }
  trainer.steps = config.steps;
  trainer.batch_size = config.batch_size;
  trainer.accumulation_steps = 1;
  trainer.grad_clip_norm = config.grad_clip_norm;
  trainer.log_every = config.log_every;
  trainer.checkpoint_every = config.checkpoint_every;
  trainer.output_dir = config.output_dir;
  trainer.seed = config.seed;
  trainer.resume = config.resume;
  trainer.threads = config.threads;
  return trainer;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

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

// Eight test images over their reconstructions, twice.
void write_reconstructions(Tokenizer& tokenizer, const at::Tensor& test_images,
                           const std::filesystem::path& path) {
  at::NoGradGuard no_grad;
  const int64_t shown = std::min<int64_t>(16, test_images.size(0));
  const at::Tensor originals = test_images.slice(0, 0, shown);
  const at::Tensor recon = tokenizer.reconstruct(originals).cpu();
  std::vector<at::Tensor> rows;
  for (int64_t begin = 0; begin < shown; begin += 8) {
    const int64_t end = std::min(shown, begin + 8);
    rows.push_back(originals.slice(0, begin, end));
    rows.push_back(recon.slice(0, begin, end));
  }
  write_image_grid(path, at::cat(rows),
                   {.columns = std::min<int64_t>(8, shown),
                    .padding = 2,
                    .pad_value = 128,
                    .upscale = 2,
                    .low = -1.0,
                    .high = 1.0});
}

}  // namespace

TokenizerTrainResult train_tokenizer(const TokenizerTrainConfig& config) {
  config.validate();
  const TrainerConfig trainer_config = trainer_config_for(config);
  trainer_config.validate();
  if (config.threads > 0) at::set_num_threads(static_cast<int>(config.threads));
  const std::filesystem::path out_dir = config.output_dir;
  std::filesystem::create_directories(out_dir);

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

  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(config.tokenizer, config.seed);
  // The image size must suit the tokenizer (divisibility, patch_nums): fail before training.
  (void)tokenizer->token_grids(train_images.size(2), train_images.size(3));
  int64_t parameter_count = 0;
  for (const auto& p : tokenizer->parameters()) parameter_count += p.numel();
  TESSERA_LOG_INFO("tokenizer {}: {} trainable parameters, {} steps of batch {}",
                   tokenizer_kind_name(config.tokenizer.kind), parameter_count, config.steps,
                   config.batch_size);

  TokenizerTrainResult result;
  bool ema_weights = false;
  if (parameter_count == 0) {
    // Nothing to train (the patch tokenizer): record the config, write and measure it.
    write_json_file(out_dir / "config.json", config_to_json(config));
  } else {
    const std::filesystem::path training_checkpoint = out_dir / "checkpoint.safetensors";
    if (config.resume && !std::filesystem::exists(training_checkpoint) &&
        std::filesystem::exists(out_dir / "tokenizer.safetensors")) {
      TESSERA_LOG_WARN(
          "resume: {} has tokenizer.safetensors but no training checkpoint "
          "(checkpoint.safetensors); training starts from step 0",
          out_dir.string());
    }
    TokenizerTask task(*tokenizer, train_images, config.reconstruction_loss);
    Trainer trainer(trainer_config, task);
    trainer.set_config_json(config_to_json(config));
    const TrainResult run = trainer.run();
    result.writes_files = trainer.writes_files();
    result.steps = run.steps;
    result.start_step = run.start_step;
    result.train_seconds = run.seconds;
    result.final_loss = run.final_loss;
    result.training_checkpoint = run.checkpoint;
    if (trainer.ema() != nullptr) {
      // The averaged parameters are what the tokenizer file holds; buffers stay as trained.
      at::NoGradGuard no_grad;
      const auto& averages = trainer.ema()->averages();
      for (const auto& [name, p] : task.parameters()) p.copy_(averages.at(name));
      ema_weights = true;
    }
  }
  // The other ranks hold the same weights; rank 0 writes and evaluates them.
  if (!result.writes_files) return result;
  result.checkpoint = out_dir / "tokenizer.safetensors";
  save_tokenizer_checkpoint(result.checkpoint, *tokenizer,
                            {{"tessera.step", std::to_string(result.steps)},
                             {"tessera.weights", ema_weights ? "ema" : "trained"}});

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
  write_reconstructions(*tokenizer, test_images, out_dir / "reconstructions.png");
  return result;
}

}  // namespace tessera
