// Training a tokenizer through the generic Trainer: the final weights file is a tokenizer
// checkpoint that load_tokenizer_checkpoint reads back, training lowers the loss, a resumed run is
// bit-identical to a straight one; and train_tokenizer (`tessera train-tokenizer`) end to end on
// Fashion-MNIST (a missing data set skips those: common/prerequisite.h).

#include "tessera/train/tokenizer_task.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/prerequisite.h"
#include "tessera/core/rng.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/io/safetensors.h"
#include "tessera/train/trainer.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() /
                       ("tessera_tokenizer_task_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

// The trainer checkpoints LibTorch's global CPU generator; straight and resumed runs start alike.
void reset_global_generator() {
  at::Generator g = at::globalContext().defaultGenerator(at::kCPU);
  g.set_current_seed(123);
}

TokenizerConfig small_vq_vae() {
  TokenizerConfig config;
  config.kind = TokenizerKind::vq_vae;
  VqVaeConfig vq;
  auto& ae = vq.autoencoder;
  ae.image_channels = 1;
  ae.base_channels = 8;
  ae.channel_multipliers = {1, 2};
  ae.res_blocks_per_level = 1;
  ae.lowest_level_attention = false;
  ae.middle_attention = false;
  ae.latent_channels = 4;
  ae.norm_groups = 4;
  vq.quantizer.codebook_size = 16;
  vq.quantizer.code_dim = 4;
  config.vq_vae = vq;
  return config;
}

TEST(TokenizerTask, TrainerTrainsAVqVaeAndWritesALoadableCheckpoint) {
  auto tokenizer = make_tokenizer(small_vq_vae(), 3);
  at::Generator g = make_cpu_generator(9);
  const at::Tensor images = at::rand({32, 1, 8, 8}, g) * 2 - 1;
  TokenizerTask task(*tokenizer, images);
  EXPECT_FALSE(task.parameters().empty());

  const fs::path dir =
      fs::temp_directory_path() / ("tessera_tokenizer_task_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  TrainerConfig train;
  train.steps = 30;
  train.batch_size = 8;
  train.log_every = 10;
  train.checkpoint_every = 0;
  train.optimizer.learning_rate = 3e-3;
  train.output_dir = dir.string();
  train.progress_bar = false;
  const TrainResult r = Trainer(train, task).run();
  ASSERT_EQ(r.steps, 30);
  std::ifstream in(dir / "metrics.jsonl");
  std::string first, line, last;
  std::getline(in, first);
  while (std::getline(in, line)) last = line;
  const auto j0 = nlohmann::json::parse(first), j1 = nlohmann::json::parse(last);
  EXPECT_TRUE(j0.contains("recon"));
  EXPECT_TRUE(j0.contains("batch_codes"));
  EXPECT_TRUE(j0.contains("batch_perplexity"));
  EXPECT_LT(j1["loss"].get<double>(), j0["loss"].get<double>());

  auto loaded = load_tokenizer_checkpoint(r.weights);
  for (const auto& [name, t] : tokenizer->state_dict()) {
    EXPECT_TRUE(at::equal(t, loaded->state_dict().at(name))) << name;
  }
  fs::remove_all(dir);
}

// N steps, a restart and M more steps give the bits of N + M steps straight: weights, buffers
// (the quantiser's hit counts), optimizer moments and EMA. (Dead-code restarts are off: their
// step counter and generator live outside the tokenizer's state dict.)
TEST(TokenizerTask, ResumeIsBitIdenticalToStraightRun) {
  at::Generator g = make_cpu_generator(9);
  const at::Tensor images = at::rand({32, 1, 8, 8}, g) * 2 - 1;
  TrainerConfig train;
  train.steps = 6;
  train.batch_size = 8;
  train.log_every = 2;
  train.checkpoint_every = 0;
  train.optimizer.learning_rate = 3e-3;
  train.grad_clip_norm = 0.5;
  train.ema = {.enabled = true, .decay = 0.9, .warmup = true};
  train.progress_bar = false;

  auto run = [&](const fs::path& dir, const std::vector<int64_t>& stops) {
    reset_global_generator();
    for (int64_t stop : stops) {
      // A fresh tokenizer, task and trainer per part, as a restarted process would have.
      auto tokenizer = make_tokenizer(small_vq_vae(), 3);
      TokenizerTask task(*tokenizer, images);
      TrainerConfig c = train;
      c.output_dir = dir.string();
      Trainer trainer(c, task);
      EXPECT_EQ(trainer.run(stop).steps, stop);
    }
    return SafetensorsFile::open(dir / "checkpoint.safetensors").all();
  };
  const fs::path straight = fresh_dir("straight"), resumed = fresh_dir("resumed");
  const auto a = run(straight, {6});
  const auto b = run(resumed, {2, 6});
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.contains(name)) << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << name << " differs after resuming";
  }
  fs::remove_all(straight);
  fs::remove_all(resumed);
}

bool have_fashion_mnist() {
  return fs::exists(default_fashion_mnist_directory() / "train-images-idx3-ubyte.gz");
}

TokenizerTrainConfig tiny_train_config(const fs::path& out_dir) {
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
  config.learning_rate = 1e-3;
  config.log_every = 2;
  config.checkpoint_every = 2;
  config.eval_batch_size = 8;
  config.output_dir = out_dir.string();
  config.threads = 0;
  return config;
}

TEST(TrainTokenizer, TinyEndToEndRunWritesCheckpointAndMetrics) {
  if (!have_fashion_mnist()) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << default_fashion_mnist_directory()
                                                 << " (set TESSERA_FASHION_MNIST_DIR)");
  }
  const fs::path out_dir = fresh_dir("end_to_end");
  TokenizerTrainConfig config = tiny_train_config(out_dir);

  const TokenizerTrainResult result = train_tokenizer(config);
  EXPECT_EQ(result.steps, 4);
  EXPECT_EQ(result.start_step, 0);
  EXPECT_GT(result.final_loss, 0.0);
  EXPECT_EQ(result.checkpoint, out_dir / "tokenizer.safetensors");
  EXPECT_EQ(result.training_checkpoint, out_dir / "checkpoint.safetensors");
  EXPECT_EQ(result.test.images, 20);
  EXPECT_GT(result.test.psnr, 0.0);
  ASSERT_EQ(result.test.usage_per_scale.size(), 4u);
  EXPECT_EQ(result.test.usage_per_scale[0].tokens, 20);
  EXPECT_EQ(result.test.usage.tokens, 20 * (1 + 4 + 16 + 64));
  for (const char* file : {"config.json", "metrics.json", "metrics.jsonl", "reconstructions.png",
                           "tokenizer.safetensors", "checkpoint.safetensors"}) {
    EXPECT_TRUE(fs::exists(out_dir / file)) << file;
  }
  // config.json is the tokenizer training config, so it can be handed back as --config.
  EXPECT_EQ(load_config<TokenizerTrainConfig>(out_dir / "config.json").steps, 4);
  // The tokenizer file reloads into the trained configuration with the trained (not averaged)
  // weights, and resuming continues from step 4.
  const auto reloaded = load_tokenizer_checkpoint(out_dir / "tokenizer.safetensors");
  EXPECT_EQ(reloaded->config().kind, TokenizerKind::multiscale_vq_vae);
  const auto weights = SafetensorsFile::open(out_dir / "weights.safetensors").all();
  for (const auto& [name, t] : reloaded->state_dict()) {
    EXPECT_TRUE(at::equal(t, weights.at(name))) << name;
  }
  config.resume = true;
  config.steps = 5;
  const TokenizerTrainResult more = train_tokenizer(config);
  EXPECT_EQ(more.start_step, 4);
  EXPECT_EQ(more.steps, 5);
  fs::remove_all(out_dir);
}

TEST(TrainTokenizer, ResumedRunEqualsStraightRunAndTrainingLowersTheError) {
  if (!have_fashion_mnist()) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << default_fashion_mnist_directory()
                                                 << " (set TESSERA_FASHION_MNIST_DIR)");
  }
  const fs::path straight = fresh_dir("straight_run"), resumed = fresh_dir("resumed_run");
  TokenizerTrainConfig config = tiny_train_config(straight);
  // The single-scale VQ-VAE: every piece of its training state is in its state dict. (The
  // multi-scale quantiser's usage record ema_vocab_hit_SV is blended by a step counter that is
  // not, so after a resume that one buffer, a statistic the model does not read, differs.)
  config.tokenizer = small_vq_vae();
  config.steps = 0;
  const double untrained_mse = train_tokenizer(config).test.mse;
  config.steps = 12;
  reset_global_generator();
  const TokenizerTrainResult a = train_tokenizer(config);
  EXPECT_LT(a.test.mse, untrained_mse);

  config.output_dir = resumed.string();
  config.steps = 6;
  reset_global_generator();
  EXPECT_EQ(train_tokenizer(config).steps, 6);
  config.steps = 12;
  config.resume = true;
  const TokenizerTrainResult b = train_tokenizer(config);
  EXPECT_EQ(b.start_step, 6);
  EXPECT_EQ(b.test.mse, a.test.mse);
  const auto x = SafetensorsFile::open(straight / "tokenizer.safetensors").all();
  const auto y = SafetensorsFile::open(resumed / "tokenizer.safetensors").all();
  ASSERT_EQ(x.size(), y.size());
  for (const auto& [name, t] : x) {
    ASSERT_TRUE(y.contains(name)) << name;
    EXPECT_TRUE(at::equal(t, y.at(name))) << name << " differs after resuming";
  }
  fs::remove_all(straight);
  fs::remove_all(resumed);
}

TEST(TrainTokenizer, EmaDecayWritesTheAverageAsTheTokenizer) {
  if (!have_fashion_mnist()) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << default_fashion_mnist_directory()
                                                 << " (set TESSERA_FASHION_MNIST_DIR)");
  }
  const fs::path out_dir = fresh_dir("ema");
  TokenizerTrainConfig config = tiny_train_config(out_dir);
  config.steps = 3;
  config.ema_decay = 0.5;
  train_tokenizer(config);
  const SafetensorsFile tokenizer_file = SafetensorsFile::open(out_dir / "tokenizer.safetensors");
  EXPECT_EQ(tokenizer_file.metadata().at("tessera.weights"), "ema");
  const auto tokenizer = tokenizer_file.all();
  const auto ema = SafetensorsFile::open(out_dir / "weights_ema.safetensors").all();
  const auto trained = SafetensorsFile::open(out_dir / "weights.safetensors").all();
  ASSERT_EQ(tokenizer.size(), ema.size());
  bool any_parameter_differs_from_trained = false;
  for (const auto& [name, t] : tokenizer) {
    EXPECT_TRUE(at::equal(t, ema.at(name))) << name;
    any_parameter_differs_from_trained =
        any_parameter_differs_from_trained || !at::equal(t, trained.at(name));
  }
  EXPECT_TRUE(any_parameter_differs_from_trained);
  fs::remove_all(out_dir);
}

}  // namespace
}  // namespace tessera
