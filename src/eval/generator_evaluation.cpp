#include "tessera/eval/generator_evaluation.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/eval/evaluation.h"

namespace tessera {

double BulkSamples::milliseconds_per_image() const {
  return images.defined() && images.size(0) > 0 ? 1000.0 * seconds / images.size(0) : 0.0;
}

namespace {

BulkSamples sample_labels(
    Generator& generator, const at::Tensor& labels, int64_t count, int64_t batch_size,
    uint64_t seed, const std::optional<GenerationOptions>& options, bool reference_seeding = false,
    ReferenceMultinomial reference_multinomial = ReferenceMultinomial::inverse_cdf) {
  TESSERA_CHECK(count >= 1, "sampling: count must be >= 1, got {}", count);
  TESSERA_CHECK(batch_size >= 1, "sampling: batch_size must be >= 1, got {}", batch_size);
  BulkSamples out;
  out.labels = labels;
  std::vector<at::Tensor> images;
  std::vector<std::vector<at::Tensor>> scales;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t begin = 0; begin < count; begin += batch_size) {
    const int64_t end = std::min(count, begin + batch_size);
    SampleRequest request{.seed = seed,
                          .first_index = begin,
                          .reference_seeding = reference_seeding,
                          .reference_multinomial = reference_multinomial,
                          .options = options};
    const at::Tensor batch_labels = labels.defined() ? labels.slice(0, begin, end) : at::Tensor();
    const Tokens tokens = generator.sample_tokens(batch_labels, request, end - begin);
    images.push_back(generator.decode(tokens));
    if (scales.empty()) {
      scales.resize(tokens.scales.size());
      out.tokens.grids = tokens.grids;
    }
    for (size_t s = 0; s < tokens.scales.size(); ++s) scales[s].push_back(tokens.scales[s]);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.images = at::cat(images);
  for (auto& parts : scales) out.tokens.scales.push_back(at::cat(parts));
  return out;
}

}  // namespace

BulkSamples sample_in_bulk(Generator& generator, const BulkSampleOptions& options) {
  TESSERA_CHECK(options.class_rows_first >= 0, "sampling: class_rows_first must be >= 0, got {}",
                options.class_rows_first);
  at::Tensor labels;
  const int64_t num_classes = generator.num_classes();
  if (num_classes > 0) {
    labels = at::arange(options.count, at::kLong).remainder(num_classes);
    const int64_t rows = std::min(options.count, options.class_rows_first * num_classes);
    if (rows > 0) {
      labels.slice(0, 0, rows)
          .copy_(at::arange(rows, at::kLong).div(options.class_rows_first, "floor"));
    }
  } else {
    TESSERA_CHECK(options.class_rows_first == 0,
                  "sampling: class_rows_first needs a class-conditional generator");
  }
  return sample_labels(generator, labels, options.count, options.batch_size, options.seed,
                       options.options);
}

at::Tensor class_row_labels(const Generator& generator, const ClassRowsRequest& request) {
  TESSERA_CHECK(request.per_class >= 1, "sampling: per_class must be >= 1, got {}",
                request.per_class);
  const int64_t num_classes = generator.num_classes();
  TESSERA_CHECK(num_classes > 0, "sampling: class rows need a class-conditional generator");
  std::vector<int64_t> classes = request.classes;
  if (classes.empty()) {
    for (int64_t c = 0; c < num_classes; ++c) classes.push_back(c);
  }
  for (int64_t c : classes) {
    TESSERA_CHECK(c >= 0 && c < num_classes,
                  "sampling: class {} is outside the generator's classes [0, {})", c, num_classes);
  }
  return at::tensor(classes, at::kLong).repeat_interleave(request.per_class);
}

BulkSamples sample_class_rows(Generator& generator, const ClassRowsRequest& request) {
  const at::Tensor labels = class_row_labels(generator, request);
  return sample_labels(generator, labels, labels.size(0), labels.size(0), request.seed,
                       request.options, request.reference_seeding, request.reference_multinomial);
}

GeneratorQuality judge_samples(Classifier& classifier, const BulkSamples& samples,
                               const GaussianStats& reference) {
  GeneratorQuality quality;
  quality.samples = samples.images.size(0);
  const at::Tensor features = classifier.features(samples.images);
  quality.fid_fm = frechet_distance(fit_gaussian(features), reference);
  quality.fid_fm_standard_error = fid_fm_bootstrap_standard_error(features, reference);
  if (samples.labels.defined()) {
    quality.conditional_accuracy = classifier_accuracy(classifier, samples.images, samples.labels);
  }
  quality.milliseconds_per_image = samples.milliseconds_per_image();
  return quality;
}

std::string samples_digest(const BulkSamples& samples) {
  TESSERA_CHECK(samples.images.defined(), "samples_digest: no images");
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto add = [&crc](const at::Tensor& tensor) {
    const at::Tensor bytes = tensor.cpu().contiguous();
    const auto* data = static_cast<const Bytef*>(bytes.data_ptr());
    // zlib takes uInt lengths: feed large tensors in pieces.
    for (size_t done = 0, total = bytes.nbytes(); done < total;) {
      const auto piece = static_cast<uInt>(std::min<size_t>(total - done, 1u << 30));
      crc = crc32(crc, data + done, piece);
      done += piece;
    }
  };
  add(samples.images.to(at::kFloat));
  if (samples.labels.defined()) add(samples.labels.to(at::kLong));
  return fmt::format("{:08x}", static_cast<uint32_t>(crc));
}

}  // namespace tessera
