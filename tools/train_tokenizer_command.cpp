// `tessera train-tokenizer`: trains a tokenizer as configured and prints the test split's
// reconstruction metrics.
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "local_ranks.h"
#include "tessera/core/config.h"
#include "tessera/distributed/process_group.h"
#include "tessera/tokenizer/tokenizer_training.h"
#include "tessera/train/tokenizer_task.h"

namespace tessera::cli {

namespace {

// Command-line overrides of a tokenizer training config; unset options keep the file's values.
struct TrainTokenizerOptions {
  std::string config_path;
  std::string out;
  std::string data;
  int64_t steps = -1;
  int64_t threads = -1;
  bool resume = false;
  int nproc = 0;  // start this many local ranks (0: run as this process)
};

void run_train_tokenizer(const TrainTokenizerOptions& options) {
  auto config = load_config<TokenizerTrainConfig>(options.config_path);
  if (!options.out.empty()) config.output_dir = options.out;
  if (!options.data.empty()) config.data.directory = options.data;
  if (options.steps >= 0) config.steps = options.steps;
  if (options.threads >= 0) config.threads = options.threads;
  if (options.resume) config.resume = true;
  const TokenizerTrainResult result = train_tokenizer(config);
  if (!result.writes_files) return;  // a rank > 0 of a data-parallel job: rank 0 reports
  std::printf("trained %lld steps in %.1f s (final loss %.5f)\ncheckpoint: %s\n",
              static_cast<long long>(result.steps), result.train_seconds, result.final_loss,
              result.checkpoint.c_str());
  if (!result.training_checkpoint.empty()) {
    std::printf("training state: %s (--resume continues from it)\n",
                result.training_checkpoint.c_str());
  }
  std::printf("%s\n", format_reconstruction_metrics(result.test).c_str());
}

}  // namespace

void setup_train_tokenizer(CLI::App& app, const CommandContext& context) {
  auto* command = app.add_subcommand(
      "train-tokenizer", "train a tokenizer on Fashion-MNIST and measure its reconstructions");
  auto options = std::make_shared<TrainTokenizerOptions>();
  command->add_option("--config", options->config_path,
                      "training config (JSON), e.g. configs/tokenizer/vq_vae_fashion_mnist.json")
      ->required()
      ->check(CLI::ExistingFile);
  command->add_option("--out", options->out, "output folder (default: the config's output_dir)");
  command->add_option("--data", options->data,
                      "Fashion-MNIST folder (default: the config's data.directory)");
  command->add_option("--steps", options->steps, "training steps (default: the config's steps)");
  command->add_option("--threads", options->threads,
                      "intra-op threads, 0 = LibTorch's default (default: the config's)");
  command->add_flag("--resume", options->resume,
                    "continue from <out>/checkpoint.safetensors (the whole training state) if "
                    "it exists");
  add_nproc_option(*command, options->nproc);
  command->callback([options, arguments = context.arguments] {
    // The tokenizer's trainer keeps the default distributed settings.
    if (!ran_as_local_ranks(options->nproc, arguments, DistributedConfig{}.timeout_seconds)) {
      run_train_tokenizer(*options);
    }
  });
}

}  // namespace tessera::cli
