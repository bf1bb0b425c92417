#pragma once
// A tokenizer as a TrainingTask, so the Trainer (with its optimizers, EMA, schedule and
// bit-identical resume) can train any Tokenizer: loss = reconstruction (MSE or L1 on [−1, 1]) +
// the tokenizer's regularisation (VQ or KL terms), as train_tokenizer does.
//
// The final weights.safetensors written by the Trainer holds the tokenizer's state dict and its
// config under kTokenizerConfigMetadataKey, so load_tokenizer_checkpoint reads it.

#include <ATen/core/Tensor.h>

#include "tessera/pipeline/training_task.h"
#include "tessera/tokenizer/tokenizer.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera {

class TokenizerTask final : public TrainingTask {
 public:
  /// images float [N, C, H, W] in [−1, 1] (prepare_fashion_mnist_images); the tokenizer must
  /// outlive the task. Parameters are the state-dict entries that are among
  /// tokenizer.parameters(); the other entries are buffers.
  TokenizerTask(Tokenizer& tokenizer, at::Tensor images,
                ReconstructionLoss reconstruction_loss = ReconstructionLoss::mse);

  std::map<std::string, at::Tensor> parameters() override { return parameters_; }
  std::map<std::string, at::Tensor> buffers() override { return buffers_; }
  int64_t dataset_size() const override { return images_.size(0); }
  TrainingLoss loss(const at::Tensor& indices, at::Generator& generator) override;
  void set_training(bool training) override { tokenizer_.set_training(training); }
  at::Device device() const override { return tokenizer_.device(); }
  std::map<std::string, std::string> metadata() const override;

 private:
  Tokenizer& tokenizer_;
  at::Tensor images_;
  ReconstructionLoss reconstruction_loss_;
  std::map<std::string, at::Tensor> parameters_, buffers_;
};  ///< A tokenizer as a TrainingTask over images: reconstruction plus its regularisation.

}  // namespace tessera
