// The evaluation classifier: shapes and errors, the shipped weights' accuracy on the whole test set
// against the figure docs/evaluation.md records, accuracy counting, FID-FM plumbing, and (disabled
// by default) the program that trains the shipped classifier.

#include "tessera/eval/classifier.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include "common/prerequisite.h"
#include "common/source_paths.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/eval/evaluation.h"
#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/patch_tokenizer.h"
#include "tessera/tokenizer/tokenizer_training.h"
#include "tessera/train/classifier_training.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

const fs::path kShippedClassifier =
    tessera::testing::source_dir() / "models" / "classifier_fashion_mnist.safetensors";
// The accuracy stated in docs/evaluation.md: 91.80 % of the 10000 test images, i.e. 9180 of them
// (a figure with two decimals of a percentage of 10000 images is an exact count).
constexpr double kStatedTestAccuracy = 0.918;
constexpr int64_t kTestImages = 10000;
constexpr int64_t kStatedCorrect = 9180;

bool have_fashion_mnist() {
  return fs::exists(default_fashion_mnist_directory() / "t10k-images-idx3-ubyte.gz");
}

TEST(Classifier, ShapesFeaturesAndErrors) {
  Classifier classifier({}, 1);
  const at::Tensor images = at::rand({3, 1, 32, 32}) * 2 - 1;
  const ClassifierOutput out = classifier.forward(images);
  EXPECT_EQ(out.logits.sizes(), (at::IntArrayRef{3, 10}));
  EXPECT_EQ(out.features.sizes(), (at::IntArrayRef{3, 128}));
  EXPECT_EQ(classifier.features(images, 2).sizes(), (at::IntArrayRef{3, 128}));
  EXPECT_EQ(classifier.predict(images).sizes(), (at::IntArrayRef{3}));
  EXPECT_THROW(classifier.forward(at::zeros({3, 1, 28, 28})), Error);
  EXPECT_THROW(classifier.forward(at::zeros({3, 3, 32, 32})), Error);
  classifier.set_training(true);
  EXPECT_THROW(classifier.forward(images), Error);  // dropout needs a generator
  EXPECT_THROW(Classifier(ClassifierConfig{.image_size = 30}), Error);
  // Same seed, same weights; the state dict round-trips through a file.
  const fs::path path = fs::temp_directory_path() /
                        ("tessera_classifier_" + std::to_string(::getpid()) + ".safetensors");
  save_classifier(path, Classifier({}, 1));
  Classifier loaded = load_classifier(path);
  Classifier again({}, 1);
  again.set_training(false);
  EXPECT_TRUE(at::equal(loaded.forward(images).logits, again.forward(images).logits));
  auto state = again.state_dict();
  state.erase("fc.weight");
  EXPECT_THROW(again.load_state_dict(state), Error);
  fs::remove(path);
}

TEST(Evaluation, FidOfASetWithItselfIsZeroAndReportHasFloors) {
  Classifier classifier({}, 2);
  at::Generator g = make_cpu_generator(4);
  const at::Tensor a = at::rand({300, 1, 32, 32}, g) * 2 - 1;
  EXPECT_NEAR(fid_fm(classifier, a, a), 0.0, 1e-6);
  const at::Tensor b = at::rand({300, 1, 32, 32}, g) * 2 - 1;
  EXPECT_GT(fid_fm(classifier, a, b - 0.5), 0.0);
  // Accuracy counts exactly, batch by batch (7 does not divide 300): against the classifier's own
  // argmax (at::argmax of the logits, computed here) it is 1, against every label shifted by one
  // class 0, and with the first 120 labels right and the rest wrong 120/300.
  const at::Tensor predicted = classifier.forward(a).logits.argmax(1);
  const at::Tensor wrong = (predicted + 1) % 10;
  EXPECT_EQ(classifier_accuracy(classifier, a, predicted, 7), 1.0);
  EXPECT_EQ(classifier_accuracy(classifier, a, wrong, 7), 0.0);
  const at::Tensor mixed = at::cat({predicted.slice(0, 0, 120), wrong.slice(0, 120)});
  EXPECT_DOUBLE_EQ(classifier_accuracy(classifier, a, mixed, 7), 120.0 / 300.0);
  const at::Tensor labels = at::zeros({300}, at::kLong);
  // An identity tokenizer reconstructs exactly: its floor equals the test-vs-train floor.
  PatchTokenizer identity({.image_channels = 1, .patch_size = 2});
  const QualityFloors floors = quality_floors(classifier, a, b, labels, &identity, 128);
  ASSERT_TRUE(floors.fid_reconstruction_vs_train.has_value());
  EXPECT_NEAR(*floors.fid_reconstruction_vs_train, floors.fid_test_vs_train, 1e-6);
  const std::string report = format_quality_report(12.5, 0.8, floors);
  EXPECT_NE(report.find("FID-FM 12.500"), std::string::npos) << report;
  EXPECT_NE(report.find("test vs train"), std::string::npos) << report;
  EXPECT_NE(report.find("reconstructions vs train"), std::string::npos) << report;
  EXPECT_NE(report.find("conditional accuracy 80.00%"), std::string::npos) << report;
  EXPECT_THROW(classifier_accuracy(classifier, a, labels.slice(0, 0, 5)), Error);
}

// The shipped weights classify the 10000 Fashion-MNIST test images as docs/evaluation.md says:
// 9180 right, the figure also in the file's metadata. The count may move only by images whose
// decision float rounding can flip: those whose two largest logits are closer than 1e-4. The
// logits (up to 16.5) move by about 4e-6 when computed in other batches on another thread count
// (other kernels, another order of the float32 sums); the test measures that and requires it to
// stay under a fifth of the margin, so the margin covers what another machine's BLAS may change.
// Every image is counted: one more or one fewer right, beyond the near ties (one image today),
// fails.
TEST(ShippedClassifier, ReachesTheRecordedAccuracyOnTheWholeTestSet) {
  const fs::path dir = default_fashion_mnist_directory();
  if (!have_fashion_mnist()) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << dir << " (set TESSERA_FASHION_MNIST_DIR)");
  }
  ASSERT_TRUE(fs::exists(kShippedClassifier)) << kShippedClassifier;
  EXPECT_LT(fs::file_size(kShippedClassifier), 2u * 1024 * 1024);
  const auto metadata = SafetensorsFile::open(kShippedClassifier).metadata();
  EXPECT_DOUBLE_EQ(std::stod(metadata.at("tessera.classifier.test_accuracy")), kStatedTestAccuracy);
  EXPECT_EQ(metadata.at("tessera.classifier.test_images"), std::to_string(kTestImages));

  Classifier classifier = load_classifier(kShippedClassifier);
  const LabeledImages test = load_fashion_mnist(DatasetSplit::test);
  ASSERT_EQ(test.labels.size(0), kTestImages);
  const at::Tensor images = prepare_fashion_mnist_images(test, 32, 1);
  std::vector<at::Tensor> logits;
  {
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < kTestImages; i += 500) {
      logits.push_back(classifier.forward(images.slice(0, i, i + 500)).logits);
    }
  }
  const at::Tensor all = at::cat(logits);
  const int64_t correct = (all.argmax(1) == test.labels).sum().item<int64_t>();
  // The margin's premise, measured: the first 500 images' logits computed 50 at a time on 2
  // threads (other kernels' blocking and summation order) differ from these by far less.
  double rounding = 0;
  {
    at::NoGradGuard no_grad;
    const int previous_threads = at::get_num_threads();
    at::set_num_threads(2);
    for (int64_t i = 0; i < 500; i += 50) {
      const int64_t end = i + 50;
      const at::Tensor other = classifier.forward(images.slice(0, i, end)).logits;
      rounding = std::max(rounding, (other - all.slice(0, i, end)).abs().max().item<double>());
    }
    at::set_num_threads(previous_threads);
  }
  EXPECT_LT(rounding, 1e-4 / 5);
  const at::Tensor top2 = std::get<0>(all.topk(2, 1));
  const int64_t near_ties = (top2.select(1, 0) - top2.select(1, 1) < 1e-4).sum().item<int64_t>();
  std::printf(
      "shipped classifier: %lld of %lld test images right, %lld near-tied; largest logit "
      "%.1f, median of the largest %.1f; other batching and threads: %.1e\n",
      static_cast<long long>(correct), static_cast<long long>(kTestImages),
      static_cast<long long>(near_ties), all.abs().max().item<double>(),
      top2.select(1, 0).abs().median().item<double>(), rounding);
  EXPECT_NEAR(correct, kStatedCorrect, near_ties)
      << "docs/evaluation.md records " << kStatedTestAccuracy << " of " << kTestImages;
}

// The program that trains the shipped classifier (see docs/evaluation.md):
//   build/tests/tessera_pipeline_tests --gtest_also_run_disabled_tests
//     --gtest_filter='*TrainShippedClassifier*'   (one command line)
// reads $TESSERA_CLASSIFIER_CONFIG (default configs/classifier/fashion_mnist.json), run from the
// repository root.
TEST(ClassifierProgram, DISABLED_TrainShippedClassifier) {
  const char* env = std::getenv("TESSERA_CLASSIFIER_CONFIG");
  const fs::path config_path =
      env != nullptr ? fs::path(env)
                     : tessera::testing::source_dir() / "configs/classifier/fashion_mnist.json";
  const auto config = load_config<ClassifierTrainConfig>(config_path);
  const ClassifierTrainResult r = train_classifier(config);
  std::cout << "classifier: " << r.train.steps << " steps in " << r.train.seconds
            << " s; test accuracy " << r.test_accuracy << " on " << r.test_images
            << " images; FID-FM test vs train " << r.fid_test_vs_train << "; weights " << r.weights
            << std::endl;
}

}  // namespace
}  // namespace tessera
