// Training a tokenizer through the generic Trainer: the final weights file is a tokenizer
// checkpoint that load_tokenizer_checkpoint reads back, and training lowers the loss.

#include "tessera/pipeline/tokenizer_task.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tessera/core/rng.h"
#include "tessera/pipeline/trainer.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

TEST(TokenizerTask, TrainerTrainsAVqVaeAndWritesALoadableCheckpoint) {
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
  auto tokenizer = make_tokenizer(config, 3);
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
  EXPECT_LT(j1["loss"].get<double>(), j0["loss"].get<double>());

  auto loaded = load_tokenizer_checkpoint(r.weights);
  for (const auto& [name, t] : tokenizer->state_dict()) {
    EXPECT_TRUE(at::equal(t, loaded->state_dict().at(name))) << name;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
