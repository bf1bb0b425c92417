#pragma once
// Training the evaluation classifier (classifier.h) on Fashion-MNIST with the Trainer.
//
// Images are prepared exactly as the tokenizers see them (prepare_fashion_mnist_images: [−1, 1],
// padded with −1 to 32x32), so generated and reconstructed images can be fed to it unchanged.
// Augmentation (optional): a horizontal flip with probability ½ and a shift of up to
// `max_shift` pixels in each direction, drawn per image from the task's generator; the shift
// only moves background through the image border when max_shift <= the padding (2 at 32x32).
//
// train_classifier writes the Trainer's files to train.output_dir, evaluates the classifier on the
// test set (accuracy, and the FID-FM floor of test against train), and copies the weights to
// `weights_out` (config and results in the metadata) when it is set.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "tessera/core/config.h"
#include "tessera/eval/classifier.h"
#include "tessera/train/trainer.h"
#include "tessera/train/training_task.h"

namespace tessera {

struct ClassifierTrainConfig {
  ClassifierConfig model{};  ///< the architecture
  TrainerConfig train{};  ///< the training loop
  std::string data_directory = "";  ///< empty: $TESSERA_FASHION_MNIST_DIR, then the Debian folder
  int64_t train_images = 0;         ///< the first N training images; 0: all 60000
  int64_t eval_images = 0;          ///< the first N test images; 0: all 10000
  bool augment = true;  ///< random shifts in training
  int64_t max_shift = 2;  ///< largest shift, in pixels
  int64_t eval_batch_size = 500;  ///< images per evaluation batch
  std::string weights_out = "";  ///< e.g. models/classifier_fashion_mnist.safetensors
  uint64_t init_seed = 0;  ///< the parameters' initialisation

  template <class Visitor>
  void visit(Visitor& v) {
    v("model", model);
    v("train", train);
    v("data_directory", data_directory);
    v("train_images", train_images);
    v("eval_images", eval_images);
    v("augment", augment);
    v("max_shift", max_shift);
    v("eval_batch_size", eval_batch_size);
    v("weights_out", weights_out);
    v("init_seed", init_seed);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< What train_classifier trains, on what data.

/// The TrainingTask of a classifier over labelled images: cross-entropy (the "accuracy" of each
/// batch is reported as a loss term).
class ClassifierTask final : public TrainingTask {
 public:
  /// images float [N, C, H, W] in [−1, 1], labels int64 [N]; the classifier must outlive the task.
  ClassifierTask(Classifier& classifier, at::Tensor images, at::Tensor labels, bool augment,
                 int64_t max_shift);

  std::map<std::string, at::Tensor> parameters() override { return classifier_.parameters(); }
  std::map<std::string, at::Tensor> buffers() override { return classifier_.buffers(); }
  int64_t dataset_size() const override { return images_.size(0); }
  TrainingLoss loss(const at::Tensor& indices, at::Generator& generator) override;
  void set_training(bool training) override { classifier_.set_training(training); }
  std::map<std::string, std::string> metadata() const override;

 private:
  Classifier& classifier_;
  at::Tensor images_, labels_;
  bool augment_;
  int64_t max_shift_;
};

struct ClassifierTrainResult {
  TrainResult train{};  ///< the training loop's result
  int64_t test_images = 0;  ///< test images evaluated
  double test_accuracy = 0;  ///< accuracy on them
  double fid_test_vs_train = 0;  ///< the FID-FM floor with this classifier
  std::filesystem::path weights{};  ///< the weights file written
};  ///< What train_classifier measured and wrote.
/// Trains the classifier on Fashion-MNIST, then evaluates it on the test set.
ClassifierTrainResult train_classifier(const ClassifierTrainConfig& config);

}  // namespace tessera
