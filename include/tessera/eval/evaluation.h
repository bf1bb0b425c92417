#pragma once
// Sample quality on Fashion-MNIST: FID-FM and conditional accuracy, and the floors to print beside
// them (docs/architecture.md, "Data and quality").
//
// FID-FM is the Fréchet distance (frechet_distance.h) between Gaussians fitted to the evaluation
// classifier's penultimate features (classifier.h) of two image sets. Like Inception FID it is
// biased upwards for small sets: compare numbers computed with the same set sizes. The floors:
//   * real test images against real training images: what a perfect generator scores with as many
//     samples as the test set has (10000);
//   * the tokenizer's reconstructions of the test images against the training images: the best a
//     generator over that tokenizer's tokens can score.
// Conditional accuracy is the classifier's accuracy on class-conditional samples, judged against
// the labels they were asked for (the classifier's own test accuracy is its ceiling).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>

#include "tessera/eval/classifier.h"
#include "tessera/eval/frechet_distance.h"

namespace tessera {

class Tokenizer;

/// Gaussian statistics of the classifier's features of `images` ([N, C, H, W] in [−1, 1], N >= 2).
GaussianStats feature_statistics(Classifier& classifier, const at::Tensor& images,
                                 int64_t batch_size = 500);

/// FID-FM between two image sets, or between an image set and precomputed reference statistics.
double fid_fm(Classifier& classifier, const at::Tensor& images_a, const at::Tensor& images_b,
              int64_t batch_size = 500);
double fid_fm(Classifier& classifier, const at::Tensor& images, const GaussianStats& reference,
              int64_t batch_size = 500);  ///< See the overload above.

/// The standard error of FID-FM at N = features.size(0) samples against fixed `reference`
/// statistics, by the bootstrap (Efron 1979): the standard deviation of
/// frechet_distance(fit_gaussian(resample), reference) over `replicates` resamples of N feature
/// rows drawn with replacement, from a CPU generator seeded with `seed` (so the figure is
/// reproducible). It estimates how much FID-FM moves between independent sets of N samples from
/// the same generator: what the quality check's bands are built from (docs/evaluation.md, "The
/// quality check"). features: [N, D], N >= 2; replicates >= 2.
double fid_fm_bootstrap_standard_error(const at::Tensor& features, const GaussianStats& reference,
                                       int64_t replicates = 200, uint64_t seed = 0);

/// The fraction of images the classifier assigns to their label (labels int64 [N]). For
/// class-conditional samples pass the labels they were generated for: that is the conditional
/// accuracy.
double classifier_accuracy(Classifier& classifier, const at::Tensor& images,
                           const at::Tensor& labels, int64_t batch_size = 500);

struct QualityFloors {
  int64_t reference_images = 0;  ///< training images in the reference statistics
  int64_t test_images = 0;  ///< test images measured
  double fid_test_vs_train = 0;  ///< FID-FM of the test set against the reference
  std::optional<double> fid_reconstruction_vs_train{};  ///< when a tokenizer was given
  std::optional<double> test_accuracy{};                ///< when test labels were given
};  ///< Reference levels for FID-FM and accuracy, measured on real images.

/// The floors above. `test_labels` (optional, may be undefined) adds the classifier's test
/// accuracy; `tokenizer` (optional) adds the reconstruction floor (reconstructing in evaluation
/// mode, batch by batch).
QualityFloors quality_floors(Classifier& classifier, const at::Tensor& train_images,
                             const at::Tensor& test_images, const at::Tensor& test_labels = {},
                             Tokenizer* tokenizer = nullptr, int64_t batch_size = 500);

/// "FID-FM 12.34 (floors: test vs train 0.52, reconstructions vs train 3.10)  conditional accuracy
/// 85.2% (classifier test accuracy 92.6%)": a result with its floors beside it. Unset parts are
/// left out.
std::string format_quality_report(std::optional<double> fid, std::optional<double> accuracy,
                                  const QualityFloors& floors);

}  // namespace tessera
