#pragma once
// Sampling a Generator in bulk and judging the samples: what `tessera sample`, `tessera eval` and
// the demo run.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tessera/eval/classifier.h"
#include "tessera/eval/frechet_distance.h"
#include "tessera/pipeline/generator.h"

namespace tessera {

struct BulkSampleOptions {
  int64_t count = 1000;      ///< samples in all
  int64_t batch_size = 100;  ///< samples per sample() call
  uint64_t seed = 0;  ///< the request's seed
  std::optional<GenerationOptions> options{};  ///< the generator's defaults when unset
  /// When > 0, the first class_rows_first·num_classes samples ask for the classes class by class,
  /// class_rows_first each: with batch_size equal to that count they are exactly the grid
  /// sample_class_rows draws with per_class = class_rows_first (same seed and options). The rest
  /// cycle through the classes from there. `tessera demo` uses it to judge the grid it shows.
  int64_t class_rows_first = 0;
};  ///< What sample_in_bulk draws.

struct BulkSamples {
  at::Tensor images{};  ///< [count, C, H, W] in [−1, 1]
  at::Tensor labels{};  ///< int64 [count]: the classes asked for (undefined when unconditional)
  Tokens tokens{};      ///< what the schedule produced, every scale [count, ...]
  double seconds = 0;   ///< wall time of sampling and decoding
  double milliseconds_per_image() const;  ///< Wall time per image, in milliseconds.
};  ///< Samples with their classes and timing.

/// Class-balanced requests: sample i asks for class i mod num_classes (after the class rows, if
/// BulkSampleOptions::class_rows_first asks for them; each class still gets the same count when
/// count is a multiple of num_classes). Sample i is numbered i in the request
/// (SampleRequest::first_index), so the result does not depend on batch_size.
BulkSamples sample_in_bulk(Generator& generator, const BulkSampleOptions& options);

struct ClassRowsRequest {
  int64_t per_class = 10;  ///< samples of each class
  /// The classes, one grid row each, in this order; empty: every class of the generator.
  std::vector<int64_t> classes{};
  uint64_t seed = 0;  ///< the request's seed
  /// SampleRequest::reference_seeding (the whole grid is one batch either way).
  bool reference_seeding = false;
  /// SampleRequest::reference_multinomial.
  ReferenceMultinomial reference_multinomial = ReferenceMultinomial::inverse_cdf;
  std::optional<GenerationOptions> options{};  ///< the generator's defaults when unset
};  ///< What sample_class_rows draws.

/// The labels sample_class_rows draws for `request`: each requested class (every class of the
/// generator when none) repeated per_class times, int64 [classes × per_class]. Throws
/// tessera::Error naming a class outside the generator's range, or for an unconditional
/// generator.
at::Tensor class_row_labels(const Generator& generator, const ClassRowsRequest& request);

/// per_class samples of each requested class, class by class (one grid row per class), as one
/// batch. Throws tessera::Error naming a class outside the generator's range.
BulkSamples sample_class_rows(Generator& generator, const ClassRowsRequest& request);

struct GeneratorQuality {
  int64_t samples = 0;  ///< samples judged
  double fid_fm = 0;  ///< their FID-FM
  /// FID-FM's bootstrap standard error at this sample count (fid_fm_bootstrap_standard_error, 200
  /// resamples, seed 0).
  double fid_fm_standard_error = 0;
  std::optional<double> conditional_accuracy{};  ///< conditional generators only
  double milliseconds_per_image = 0;  ///< sampling time per image
};  ///< What judge_samples measured.

/// FID-FM of `samples` against `reference` (e.g. the training images' statistics) with its
/// bootstrap standard error and, when the samples have labels, the classifier's accuracy on them.
GeneratorQuality judge_samples(Classifier& classifier, const BulkSamples& samples,
                               const GaussianStats& reference);

/// A CRC-32 (zlib's) of the samples' images as stored (float32 bytes, row-major) followed by
/// their labels, as 8 hex digits. Sampling is bit-reproducible on one CPU (docs/determinism.md),
/// so a changed digest there means the samples changed, however little: the quality check's
/// exact comparison. Not a security hash.
std::string samples_digest(const BulkSamples& samples);

}  // namespace tessera
