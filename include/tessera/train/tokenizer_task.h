#pragma once
// Tokenizer training on the shared Trainer: TokenizerTask (a tokenizer as a TrainingTask: loss =
// reconstruction (MSE or L1 on [−1, 1]) + the tokenizer's regularisation, VQ or KL terms) and
// train_tokenizer, what `tessera train-tokenizer --config ...` runs.
//
// train_tokenizer(config) loads Fashion-MNIST (tokenizer/tokenizer_training.h: prepared images,
// the config, the reconstruction metrics), builds the tokenizer with config.seed and trains it with
// a Trainer (trainer_config_for: AdamW with the config's betas and weight decay, constant learning
// rate after a linear warm-up, optional clipping and EMA). output_dir receives what the Trainer
// writes — config.json (here the TokenizerTrainConfig, so it can be passed back as --config),
// checkpoint.safetensors (the whole training state, every checkpoint_every steps and at the end;
// with resume a run continues from it bit-identically, except after dead-code restarts:
// docs/training.md, "Checkpoints and resume"), metrics.jsonl, weights.safetensors
// (weights_ema.safetensors with EMA) — and at the end:
//   tokenizer.safetensors  the tokenizer checkpoint (save_tokenizer_checkpoint: state dict, config
//                          in the metadata, tessera.step), read by load_tokenizer_checkpoint and
//                          named by generator configs; the EMA parameters when ema_decay > 0,
//                          else the trained ones
//   metrics.json           the test split's reconstruction metrics, steps, time, final loss
//   reconstructions.png    test images in odd rows, their reconstructions below them
// A tokenizer without parameters (patch) is not trained: it is written and measured.
//
// TokenizerTask's loss terms for metrics.jsonl: "recon", the tokenizer's own terms, its counters
// ("restarted" dead codes, per step) and, for discrete tokenizers, the batch's codebook usage
// ("batch_codes", "batch_perplexity").

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "tessera/tokenizer/tokenizer.h"
#include "tessera/tokenizer/tokenizer_training.h"
#include "tessera/train/trainer.h"
#include "tessera/train/training_task.h"

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

/// The Trainer settings of a tokenizer training config: AdamW (learning_rate, adam_beta1/2, eps
/// 1e-8, weight_decay), a constant schedule after warmup_steps, EMA when ema_decay > 0, and the
/// config's steps, batch_size, grad_clip_norm, log_every, checkpoint_every, output_dir, seed,
/// threads and resume.
TrainerConfig trainer_config_for(const TokenizerTrainConfig& config);

struct TokenizerTrainResult {
  int64_t steps = 0;         ///< the step count reached
  int64_t start_step = 0;    ///< > 0 when resumed
  double train_seconds = 0;  ///< wall time of the training loop
  double final_loss = 0;     ///< mean training loss over the last log interval (0: no step run)
  ReconstructionMetrics test{};  ///< reconstruction on the test images
  std::filesystem::path checkpoint{};  ///< output_dir/tokenizer.safetensors
  /// output_dir/checkpoint.safetensors, what resume continues from (empty when nothing was
  /// trained).
  std::filesystem::path training_checkpoint{};
  /// False on the ranks > 0 of a data-parallel job: they train, and rank 0 writes and evaluates.
  bool writes_files = true;
};  ///< What train_tokenizer measured and wrote.

/// Trains as configured (see the top of this header). Throws tessera::Error for an invalid config,
/// missing data or a non-finite loss (the last training checkpoint stays on disk).
TokenizerTrainResult train_tokenizer(const TokenizerTrainConfig& config);

}  // namespace tessera
