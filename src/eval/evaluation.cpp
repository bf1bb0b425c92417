#include "tessera/eval/evaluation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

GaussianStats feature_statistics(Classifier& classifier, const at::Tensor& images,
                                 int64_t batch_size) {
  TESSERA_CHECK(images.defined() && images.dim() == 4 && images.size(0) >= 2,
                "feature_statistics: expected at least 2 images [N, C, H, W], got {}",
                images.defined() ? fmt::format("{}", images.sizes()) : std::string("undefined"));
  return fit_gaussian(classifier.features(images, batch_size));
}

double fid_fm(Classifier& classifier, const at::Tensor& images_a, const at::Tensor& images_b,
              int64_t batch_size) {
  return frechet_distance(feature_statistics(classifier, images_a, batch_size),
                          feature_statistics(classifier, images_b, batch_size));
}

double fid_fm(Classifier& classifier, const at::Tensor& images, const GaussianStats& reference,
              int64_t batch_size) {
  return frechet_distance(feature_statistics(classifier, images, batch_size), reference);
}

double fid_fm_bootstrap_standard_error(const at::Tensor& features, const GaussianStats& reference,
                                       int64_t replicates, uint64_t seed) {
  TESSERA_CHECK(
      features.defined() && features.dim() == 2 && features.size(0) >= 2,
      "fid_fm_bootstrap_standard_error: expected features [N, D] with N >= 2, got {}",
      features.defined() ? fmt::format("{}", features.sizes()) : std::string("undefined"));
  TESSERA_CHECK(replicates >= 2, "fid_fm_bootstrap_standard_error: replicates must be >= 2, got {}",
                replicates);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t n = features.size(0);
  const at::Tensor rows = features.cpu();
  double sum = 0;
  double sum_of_squares = 0;
  for (int64_t r = 0; r < replicates; ++r) {
    const at::Tensor picked = at::randint(n, {n}, generator, at::TensorOptions(at::kLong));
    const double distance = frechet_distance(fit_gaussian(rows.index_select(0, picked)), reference);
    sum += distance;
    sum_of_squares += distance * distance;
  }
  const auto count = static_cast<double>(replicates);
  const double mean = sum / count;
  // The sample variance (divided by replicates - 1), clamped at 0 against round-off.
  return std::sqrt(std::max(0.0, (sum_of_squares - count * mean * mean) / (count - 1)));
}

double classifier_accuracy(Classifier& classifier, const at::Tensor& images,
                           const at::Tensor& labels, int64_t batch_size) {
  TESSERA_CHECK(labels.defined() && labels.dim() == 1 && images.defined() && images.dim() == 4 &&
                    labels.size(0) == images.size(0) && labels.size(0) > 0,
                "classifier_accuracy: expected images [N, C, H, W] and labels [N] with N > 0");
  TESSERA_CHECK(!labels.is_floating_point(), "classifier_accuracy: labels must be integers, got {}",
                labels.scalar_type());
  const at::Tensor predicted = classifier.predict(images, batch_size).cpu();
  return predicted.eq(labels.cpu().to(at::kLong)).to(at::kDouble).mean().item<double>();
}

QualityFloors quality_floors(Classifier& classifier, const at::Tensor& train_images,
                             const at::Tensor& test_images, const at::Tensor& test_labels,
                             Tokenizer* tokenizer, int64_t batch_size) {
  QualityFloors floors;
  const GaussianStats reference = feature_statistics(classifier, train_images, batch_size);
  floors.reference_images = train_images.size(0);
  floors.test_images = test_images.size(0);
  floors.fid_test_vs_train = fid_fm(classifier, test_images, reference, batch_size);
  if (test_labels.defined()) {
    floors.test_accuracy = classifier_accuracy(classifier, test_images, test_labels, batch_size);
  }
  if (tokenizer != nullptr) {
    const bool was_training = tokenizer->is_training();
    tokenizer->set_training(false);
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> parts;
    for (int64_t begin = 0; begin < test_images.size(0); begin += batch_size) {
      const at::Tensor batch =
          test_images.slice(0, begin, std::min(test_images.size(0), begin + batch_size));
      parts.push_back(tokenizer->reconstruct(batch.to(tokenizer->device())).cpu());
    }
    tokenizer->set_training(was_training);
    floors.fid_reconstruction_vs_train = fid_fm(classifier, at::cat(parts), reference, batch_size);
  }
  return floors;
}

std::string format_quality_report(std::optional<double> fid, std::optional<double> accuracy,
                                  const QualityFloors& floors) {
  std::string out;
  std::string floor_text = fmt::format("test vs train {:.3f}", floors.fid_test_vs_train);
  if (floors.fid_reconstruction_vs_train) {
    floor_text +=
        fmt::format(", reconstructions vs train {:.3f}", *floors.fid_reconstruction_vs_train);
  }
  if (fid) {
    out = fmt::format("FID-FM {:.3f} (floors: {})", *fid, floor_text);
  } else {
    out = fmt::format("FID-FM floors: {}", floor_text);
  }
  if (accuracy) {
    out += fmt::format("  conditional accuracy {:.2f}%", 100.0 * *accuracy);
    if (floors.test_accuracy) {
      out += fmt::format(" (classifier test accuracy {:.2f}%)", 100.0 * *floors.test_accuracy);
    }
  } else if (floors.test_accuracy) {
    out += fmt::format("  classifier test accuracy {:.2f}%", 100.0 * *floors.test_accuracy);
  }
  return out;
}

}  // namespace tessera
