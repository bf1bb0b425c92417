#include "tessera/train/generator_training.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <utility>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/core/format.h"
#include "tessera/core/logging.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera {

void GeneratorDataConfig::validate() const {
  TESSERA_CHECK(train_images >= 0, "data.train_images must be >= 0 (0: all), got {}",
                train_images);
  TESSERA_CHECK(encode_batch_size >= 1, "data.encode_batch_size must be >= 1, got {}",
                encode_batch_size);
}

void GeneratorTrainConfig::validate() const {
  TESSERA_CHECK(!tokenizer.empty(),
                "tokenizer: the path of a tokenizer checkpoint is required (tessera "
                "train-tokenizer writes <out>/tokenizer.safetensors)");
  data.validate();
  trainer.validate();
}

GeneratorTask::GeneratorTask(Generator& generator, Tokens tokens, at::Tensor labels)
    : generator_(generator), tokens_(std::move(tokens)), labels_(std::move(labels)) {
  tokens_.validate();
  TESSERA_CHECK(labels_.dim() == 1 && labels_.size(0) == tokens_.batch_size(),
                "GeneratorTask: {} labels for {} token sequences", labels_.numel(),
                tokens_.batch_size());
}

std::map<std::string, at::Tensor> GeneratorTask::parameters() {
  return generator_.trainable_parameters();
}

TrainingLoss GeneratorTask::loss(const at::Tensor& indices, at::Generator& generator) {
  TrainingBatch batch;
  batch.tokens.grids = tokens_.grids;
  for (const at::Tensor& scale : tokens_.scales) {
    batch.tokens.scales.push_back(scale.index_select(0, indices));
  }
  if (generator_.num_classes() > 0) batch.labels = labels_.index_select(0, indices);
  ScheduleLoss loss = generator_.loss(batch, generator);
  return {loss.loss, std::move(loss.terms)};
}

std::map<std::string, std::string> GeneratorTask::metadata() const {
  return {{"tessera.generator_config", config_to_json(generator_.config()).dump()}};
}

Tokens encode_dataset(Tokenizer& tokenizer, const at::Tensor& images, int64_t batch_size) {
  TESSERA_CHECK(images.dim() == 4 && images.size(0) >= 1,
                "encode_dataset: images must be [N, C, H, W] with N >= 1, got {}",
                images.sizes());
  at::NoGradGuard no_grad;
  tokenizer.set_training(false);
  std::vector<std::vector<at::Tensor>> per_scale;
  Tokens out;
  for (int64_t begin = 0; begin < images.size(0); begin += batch_size) {
    const int64_t end = std::min(images.size(0), begin + batch_size);
    Tokens part = tokenizer.encode(images.slice(0, begin, end));
    if (per_scale.empty()) {
      per_scale.resize(part.scales.size());
      out.grids = part.grids;
    }
    for (size_t s = 0; s < part.scales.size(); ++s) per_scale[s].push_back(part.scales[s]);
  }
  for (auto& parts : per_scale) out.scales.push_back(at::cat(parts));
  return out;
}

GeneratorTrainResult train_generator(const GeneratorTrainConfig& config) {
  config.validate();
  if (config.trainer.threads > 0) at::set_num_threads(static_cast<int>(config.trainer.threads));
  std::shared_ptr<Tokenizer> tokenizer = load_tokenizer_checkpoint(config.tokenizer);
  Generator generator(config.generator, tokenizer, config.init_seed);
  GeneratorTrainResult result;
  result.parameters = generator.num_parameters();

  FashionMnistOptions data_options;
  data_options.directory = config.data.directory;
  LabeledImages train = load_fashion_mnist(DatasetSplit::train, data_options);
  if (config.data.train_images > 0 && config.data.train_images < train.size()) {
    train.images = train.images.slice(0, 0, config.data.train_images);
    train.labels = train.labels.slice(0, 0, config.data.train_images);
  }
  const at::Tensor images = prepare_fashion_mnist_images(
      train, config.generator.image_size, config.generator.image_channels);
  const auto start = std::chrono::steady_clock::now();
  Tokens tokens = encode_dataset(*tokenizer, images, config.data.encode_batch_size);
  result.encode_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  TESSERA_LOG_INFO("generator: {} parameters ({} schedule); encoded {} training images in {:.1f} s",
                   result.parameters, generator.schedule().name(), images.size(0),
                   result.encode_seconds);

  GeneratorTask task(generator, std::move(tokens), train.labels);
  Trainer trainer(config.trainer, task);
  result.train = trainer.run();
  // The other ranks of a data-parallel job hold the same weights; rank 0 writes them.
  if (result.train.steps >= config.trainer.steps && trainer.writes_files()) {
    if (trainer.ema() != nullptr) generator.load_trainable_parameters(trainer.ema()->averages());
    result.generator_file = std::filesystem::path(config.trainer.output_dir) / "generator.safetensors";
    generator.save(result.generator_file,
                   {{"tessera.step", std::to_string(result.train.steps)},
                    {"tessera.weights", trainer.ema() != nullptr ? "ema" : "trained"}});
  }
  return result;
}

}  // namespace tessera
