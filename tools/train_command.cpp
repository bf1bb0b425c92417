// `tessera train`: trains a generator (tokenizer frozen; backbone, head and schedule from the
// config), resuming from its checkpoint.
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "local_ranks.h"
#include "tessera/core/config.h"
#include "tessera/distributed/process_group.h"
#include "tessera/train/generator_training.h"

namespace tessera::cli {

namespace {

// Command-line overrides of a generator training config; unset options keep the file's values.
struct TrainOptions {
  std::string config_path;
  std::string out;
  std::string data;
  int64_t steps = -1;
  int64_t threads = -1;
  bool fresh = false;  // ignore an existing checkpoint instead of resuming
  int nproc = 0;       // start this many local ranks (0: run as this process)
  double timeout = -1;  // distributed.timeout_seconds
};

void run_train(const TrainOptions& options) {
  auto config = load_config<GeneratorTrainConfig>(options.config_path);
  if (!options.out.empty()) config.trainer.output_dir = options.out;
  if (!options.data.empty()) config.data.directory = options.data;
  if (options.steps >= 0) config.trainer.steps = options.steps;
  if (options.threads >= 0) config.trainer.threads = options.threads;
  if (options.fresh) config.trainer.resume = false;
  if (options.timeout > 0) config.trainer.distributed.timeout_seconds = options.timeout;
  const GeneratorTrainResult result = train_generator(config);
  if (!result.train.writes_files) return;  // a rank > 0 of a data-parallel job: rank 0 reports
  std::printf("generator: %lld parameters, %s schedule\n",
              static_cast<long long>(result.parameters),
              config_to_json(config.generator.schedule)["kind"].get<std::string>().c_str());
  std::printf("trained steps %lld..%lld in %.1f s (tokens encoded in %.1f s), final loss %.5f\n",
              static_cast<long long>(result.train.start_step),
              static_cast<long long>(result.train.steps), result.train.seconds,
              result.encode_seconds, result.train.final_loss);
  std::printf("checkpoint: %s\n", result.train.checkpoint.c_str());
  if (!result.generator_file.empty()) {
    std::printf("generator: %s\n", result.generator_file.c_str());
  }
}

}  // namespace

void setup_train(CLI::App& app, const CommandContext& context) {
  auto* train = app.add_subcommand(
      "train", "train a generator (tokenizer frozen; backbone, head and schedule from the config)");
  auto options = std::make_shared<TrainOptions>();
  train->add_option("--config", options->config_path,
                    "generator training config (JSON), e.g. configs/generator/maskgit_fashion_mnist.json")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("--out", options->out, "output folder (default: the config's trainer.output_dir)");
  train->add_option("--data", options->data, "Fashion-MNIST folder (default: the config's data.directory)");
  train->add_option("--steps", options->steps, "optimizer steps (default: the config's trainer.steps)");
  train->add_option("--threads", options->threads, "intra-op threads, 0 = LibTorch's default");
  train->add_flag("--fresh", options->fresh,
                  "start from scratch even when <out>/checkpoint.safetensors exists (default: resume)");
  add_nproc_option(*train, options->nproc);
  train
      ->add_option("--dist-timeout", options->timeout,
                   "seconds after which a rank that died or hangs stops the others (default: the "
                   "config's trainer.distributed.timeout_seconds)")
      ->check(CLI::PositiveNumber);
  train->callback([options, arguments = context.arguments] {
    const double timeout =
        options->timeout > 0 ? options->timeout : DistributedConfig{}.timeout_seconds;
    if (!ran_as_local_ranks(options->nproc, arguments, timeout)) run_train(*options);
  });
}

}  // namespace tessera::cli
