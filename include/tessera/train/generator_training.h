#pragma once
// Training a Generator on Fashion-MNIST (`tessera train --config ...`): the tokenizer is frozen,
// the backbone and head are trained by the Trainer (trainer.h) through the schedule's loss.
//
// The whole training split is encoded once, before the first step (GeneratorTask), so a step
// costs the backbone and head only. output_dir receives what the Trainer writes (config.json,
// checkpoint.safetensors, metrics.jsonl) and, at the end, generator.safetensors: the generator
// with the EMA weights when EMA is enabled (what sampling should use), else the trained ones.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "tessera/core/config.h"
#include "tessera/pipeline/generator.h"
#include "tessera/train/trainer.h"
#include "tessera/train/training_task.h"

namespace tessera {

struct GeneratorDataConfig {
  std::string directory = "";  ///< Fashion-MNIST; empty: $TESSERA_FASHION_MNIST_DIR, then Debian's
  int64_t train_images = 0;    ///< the first N training images; 0: all 60000
  int64_t encode_batch_size = 500;  ///< images per tokenizer call when encoding

  template <class Visitor>
  void visit(Visitor& v) {
    v("directory", directory);
    v("train_images", train_images);
    v("encode_batch_size", encode_batch_size);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< The training images of train_generator.

struct GeneratorTrainConfig {
  /// A tokenizer checkpoint (tessera train-tokenizer's tokenizer.safetensors), relative to the
  /// working folder.
  std::string tokenizer = "";
  GeneratorConfig generator{};  ///< the generator's parts
  TrainerConfig trainer{};  ///< the training loop
  GeneratorDataConfig data{};  ///< the images
  uint64_t init_seed = 0;  ///< the backbone's and head's initialisation

  template <class Visitor>
  void visit(Visitor& v) {
    v("tokenizer", tokenizer);
    v("generator", generator);
    v("trainer", trainer);
    v("data", data);
    v("init_seed", init_seed);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< What train_generator trains, on what data.

/// A generator as a TrainingTask over pre-encoded tokens.
class GeneratorTask final : public TrainingTask {
 public:
  /// tokens: the encoded training set (every scale [N, ...]); labels int64 [N].
  GeneratorTask(Generator& generator, Tokens tokens, at::Tensor labels);

  std::map<std::string, at::Tensor> parameters() override;
  int64_t dataset_size() const override { return labels_.size(0); }
  TrainingLoss loss(const at::Tensor& indices, at::Generator& generator) override;
  void set_training(bool training) override { generator_.set_training(training); }
  std::map<std::string, std::string> metadata() const override;

 private:
  Generator& generator_;
  Tokens tokens_;
  at::Tensor labels_;
};

/// Encodes images [N, C, H, W] in [−1, 1] batch by batch with the generator's tokenizer.
Tokens encode_dataset(Tokenizer& tokenizer, const at::Tensor& images, int64_t batch_size);

struct GeneratorTrainResult {
  TrainResult train{};  ///< the training loop's result
  std::filesystem::path generator_file{};  ///< empty unless training reached its last step
  int64_t parameters = 0;  ///< trainable parameters
  double encode_seconds = 0;  ///< time spent encoding the data set
};  ///< What train_generator measured and wrote.

/// Trains as configured. Throws tessera::Error for an invalid config, a missing tokenizer or data.
GeneratorTrainResult train_generator(const GeneratorTrainConfig& config);

}  // namespace tessera
