#pragma once
// What the Trainer trains: a model with named parameters and a loss on a batch of dataset indices.
//
// A task owns its model and data; the Trainer owns the optimizer, the schedule, the EMA, the data
// order and the checkpoints. Tokenizers, generators (backbone + head + schedule) and the
// evaluation classifier each implement this interface, so one loop with one resume logic serves
// them all.
//
// Determinism contract (what makes a resumed run bit-identical): the loss may depend only on the
// parameters, the buffers, the indices and draws from the generator it is handed (the trainer
// checkpoints that generator's state, and LibTorch's default generators too, but a task should
// not rely on the global ones).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

struct TrainingLoss {
  at::Tensor loss{};  ///< a differentiable scalar
  /// Named parts of the loss for the logs ("recon", "vq", "accuracy", ...), averaged by the trainer
  /// over a log interval.
  std::vector<std::pair<std::string, double>> terms{};
};  ///< A batch's loss and its named parts.

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;

  /// Trainable parameters under stable names; the names key the optimizer state, the EMA and the
  /// checkpoint. The tensors must be the model's own (updated in place).
  virtual std::map<std::string, at::Tensor> parameters() = 0;
  /// State that is not trained by gradients but must be saved (batch-norm statistics, EMA
  /// codebooks, usage counters), updated in place by the task.
  virtual std::map<std::string, at::Tensor> buffers() { return {}; }

  /// The number of training examples; batches are index sets into [0, dataset_size()).
  virtual int64_t dataset_size() const = 0;
  /// The loss of one (micro-)batch: `indices` int64 [B] on the CPU; `generator` (CPU) for the
  /// task's random draws (augmentation, masking, noise).
  virtual TrainingLoss loss(const at::Tensor& indices, at::Generator& generator) = 0;

  virtual void set_training(bool /*training*/) {}  ///< Training mode of the model on or off.
  virtual at::Device device() const { return at::kCPU; }  ///< Where the model is.
  /// Strings saved in every checkpoint and in the final weights file (the model's config as JSON,
  /// so that a file describes itself).
  virtual std::map<std::string, std::string> metadata() const { return {}; }
};  ///< What a Trainer trains: parameters, a data set and a loss.

}  // namespace tessera
