#pragma once
// Timed sampling calls: what `tessera sample --warmup N --repeat N --profile` prints and what
// bench/sample_bench records. Each measured call is Generator::sample (tokens and decode) with the
// same labels and request, so every repeat draws the same images.
//
//   SamplingMeasurement m = measure_sampling(generator, labels, {.seed = 0}, {.warmup = 1, .repeat = 3});
//   m.median_seconds();   m.images_per_second();   m.phases[i].seconds(Phase::decode);
//
// Peak memory is the process's resident high-water mark over the measured calls (reset before the
// first: tessera/core/process_memory.h), the weights included, the figure `/usr/bin/time -v`
// reports for a process that only samples.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "tessera/core/phase_profile.h"
#include "tessera/pipeline/generator.h"

namespace tessera {

struct SamplingRepeats {
  int64_t warmup = 1;  ///< untimed calls first (allocator and oneDNN caches warm up)
  int64_t repeat = 3;  ///< timed calls
};  ///< How many calls measure_sampling makes.

struct SamplingMeasurement {
  int64_t batch = 0;                   ///< images per call
  std::vector<double> seconds;         ///< wall time of each timed call
  std::vector<PhaseTimes> phases;      ///< each timed call's phases (tessera/core/phase_profile.h)
  int64_t peak_resident_bytes = 0;     ///< high-water mark over the timed calls; 0 if unknown
  bool peak_covers_only_the_calls = false;  ///< false: the reset failed, the peak is the process's
  at::Tensor images{};                 ///< the last call's images

  double median_seconds() const;     ///< median of `seconds`
  double images_per_second() const;  ///< batch / median_seconds()
  /// The phases of the call whose time is the median (the lower middle for an even count).
  const PhaseTimes& median_phases() const;
};  ///< Times, phases and peak memory of repeated sampling calls.

/// Runs generator.sample(labels, request) repeats.warmup + repeats.repeat times and measures the
/// timed ones. Throws tessera::Error for repeat < 1 or warmup < 0, and whatever sample() throws.
SamplingMeasurement measure_sampling(Generator& generator, const at::Tensor& labels,
                                     const SampleRequest& request, const SamplingRepeats& repeats);

}  // namespace tessera
