#include "tessera/train/classifier_training.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "tessera/core/error.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/core/format.h"
#include "tessera/core/logging.h"
#include "tessera/eval/evaluation.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera {

void ClassifierTrainConfig::validate() const {
  model.validate();
  train.validate();
  TESSERA_CHECK(train_images >= 0 && eval_images >= 0,
                "train_images and eval_images must be >= 0 (0: all), got {} and {}", train_images,
                eval_images);
  TESSERA_CHECK(max_shift >= 0, "max_shift must be >= 0, got {}", max_shift);
  TESSERA_CHECK(eval_batch_size > 0, "eval_batch_size must be positive, got {}", eval_batch_size);
}

ClassifierTask::ClassifierTask(Classifier& classifier, at::Tensor images, at::Tensor labels,
                               bool augment, int64_t max_shift)
    : classifier_(classifier),
      images_(std::move(images)),
      labels_(std::move(labels)),
      augment_(augment),
      max_shift_(max_shift) {
  TESSERA_CHECK(images_.defined() && images_.dim() == 4 && labels_.defined() &&
                    labels_.dim() == 1 && labels_.size(0) == images_.size(0),
                "ClassifierTask: expected images [N, C, H, W] and labels [N]");
  TESSERA_CHECK(max_shift_ >= 0, "ClassifierTask: max_shift must be >= 0, got {}", max_shift_);
}

TrainingLoss ClassifierTask::loss(const at::Tensor& indices, at::Generator& generator) {
  at::Tensor batch = images_.index_select(0, indices);
  const at::Tensor labels = labels_.index_select(0, indices);
  if (augment_) {
    // The same number of draws per image whatever the batch: flip, then the two shifts.
    const int64_t n = batch.size(0);
    const at::Tensor flip = at::rand({n}, generator).lt(0.5);
    const at::Tensor shifts =
        at::randint(-max_shift_, max_shift_ + 1, {n, 2}, generator, at::kLong);
    batch = at::where(flip.view({n, 1, 1, 1}), batch.flip({3}), batch);
    if (max_shift_ > 0) {
      std::vector<at::Tensor> shifted;
      shifted.reserve(static_cast<size_t>(n));
      const auto* s = shifts.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        shifted.push_back(at::roll(batch[i], {s[2 * i], s[2 * i + 1]}, {1, 2}));
      }
      batch = at::stack(shifted);
    }
  }
  const ClassifierOutput out = classifier_.forward(batch, &generator);
  const at::Tensor loss = at::cross_entropy_loss(out.logits, labels);
  const double accuracy = out.logits.detach().argmax(1).eq(labels).to(at::kDouble).mean()
                              .item<double>();
  return {loss, {{"accuracy", accuracy}}};
}

std::map<std::string, std::string> ClassifierTask::metadata() const {
  return {{kClassifierConfigMetadataKey, config_to_json(classifier_.config()).dump()}};
}

ClassifierTrainResult train_classifier(const ClassifierTrainConfig& config) {
  config.validate();
  FashionMnistOptions options;
  options.directory = config.data_directory;
  LabeledImages train_data = load_fashion_mnist(DatasetSplit::train, options);
  LabeledImages test_data = load_fashion_mnist(DatasetSplit::test, options);
  auto first = [](LabeledImages& data, int64_t n) {
    if (n > 0 && n < data.size()) {
      data.images = data.images.slice(0, 0, n);
      data.labels = data.labels.slice(0, 0, n);
    }
  };
  first(train_data, config.train_images);
  first(test_data, config.eval_images);
  const at::Tensor train_images =
      prepare_fashion_mnist_images(train_data, config.model.image_size, config.model.channels);
  const at::Tensor test_images =
      prepare_fashion_mnist_images(test_data, config.model.image_size, config.model.channels);

  Classifier classifier(config.model, config.init_seed);
  ClassifierTask task(classifier, train_images, train_data.labels, config.augment,
                      config.max_shift);
  Trainer trainer(config.train, task);
  ClassifierTrainResult result;
  result.train = trainer.run();
  // The other ranks of a data-parallel job hold the same weights; rank 0 evaluates and writes them.
  if (!trainer.writes_files()) return result;

  classifier.set_training(false);
  result.test_images = test_images.size(0);
  result.test_accuracy =
      classifier_accuracy(classifier, test_images, test_data.labels, config.eval_batch_size);
  result.fid_test_vs_train =
      fid_fm(classifier, test_images, train_images, config.eval_batch_size);
  TESSERA_LOG_INFO("classifier: test accuracy {:.2f}% on {} images, FID-FM test vs train {:.4f}",
                   100.0 * result.test_accuracy, result.test_images, result.fid_test_vs_train);
  if (!config.weights_out.empty()) {
    result.weights = config.weights_out;
    save_classifier(result.weights, classifier,
                    {{"tessera.classifier.test_accuracy", fmt::format("{:.4f}", result.test_accuracy)},
                     {"tessera.classifier.test_images", std::to_string(result.test_images)},
                     {"tessera.classifier.fid_test_vs_train",
                      fmt::format("{:.4f}", result.fid_test_vs_train)},
                     {"tessera.classifier.train_config", config_to_json(config).dump()}});
  }
  return result;
}

}  // namespace tessera
