#include "tessera/pipeline/sampling_measurement.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/core/process_memory.h"

namespace tessera {

namespace {

// Index of the median of `values` (the lower middle for an even count).
size_t median_index(const std::vector<double>& values) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  return order[(order.size() - 1) / 2];
}

}  // namespace

double SamplingMeasurement::median_seconds() const {
  TESSERA_CHECK(!seconds.empty(), "SamplingMeasurement: no timed calls");
  return seconds[median_index(seconds)];
}

double SamplingMeasurement::images_per_second() const {
  return static_cast<double>(batch) / median_seconds();
}

const PhaseTimes& SamplingMeasurement::median_phases() const {
  TESSERA_CHECK(!phases.empty(), "SamplingMeasurement: no timed calls");
  return phases[median_index(seconds)];
}

SamplingMeasurement measure_sampling(Generator& generator, const at::Tensor& labels,
                                     const SampleRequest& request, const SamplingRepeats& repeats) {
  TESSERA_CHECK(repeats.repeat >= 1 && repeats.warmup >= 0,
                "measure_sampling: repeat must be >= 1 and warmup >= 0, got repeat {} and warmup {}",
                repeats.repeat, repeats.warmup);
  TESSERA_CHECK(labels.defined() && labels.dim() == 1,
                "measure_sampling: labels must be int64 [B] (a class-conditional generator)");
  SamplingMeasurement m;
  m.batch = labels.size(0);
  for (int64_t i = 0; i < repeats.warmup; ++i) (void)generator.sample(labels, request);
  release_free_memory();  // earlier work's freed heap is not this call's peak
  m.peak_covers_only_the_calls = reset_peak_resident_bytes();
  for (int64_t i = 0; i < repeats.repeat; ++i) {
    m.images = at::Tensor();  // the previous call's images are not part of this call's peak
    PhaseProfile profile;
    m.images = generator.sample(labels, request);
    const PhaseTimes t = profile.times();
    m.seconds.push_back(t.total);
    m.phases.push_back(t);
  }
  m.peak_resident_bytes = peak_resident_bytes();
  return m;
}

}  // namespace tessera
