#pragma once
// What several `tessera` subcommands share: thread settings, the evaluation data, the sampling
// option they take from the command line, and how a table row names a generator's head.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>

#include "tessera/data/fashion_mnist.h"
#include "tessera/io/image_io.h"
#include "tessera/pipeline/generator.h"

namespace tessera::cli {

/// The grid of one row per class that sample and demo write.
inline constexpr ImageGridOptions kClassGrid{
    .columns = 10, .padding = 2, .pad_value = 96, .upscale = 2};

/// --sampling's help text (sample, eval and convert take the same patch).
inline constexpr const char* kSamplingPatchHelp =
    "JSON merge patch over the generator's sampling defaults and its schedule's sampling options, "
    "e.g. '{\"guidance\": {\"scale\": 4}, \"schedule\": {\"steps\": 4}}'";

/// --threads: 0 keeps LibTorch's default; negative is an error.
void set_threads(int64_t threads);

/// The head's kind as a table row shows it.
std::string head_name(const Generator& generator);

/// A Fashion-MNIST split prepared like the tokenizers' inputs (padded to the generator's size).
at::Tensor prepared_split(DatasetSplit split, const std::string& data_dir, int64_t image_size,
                          int64_t channels, at::Tensor* labels = nullptr);

/// --sampling: the options a patch over the generator's sampling defaults and schedule options
/// asks for (sampling_request.h), checked against the generator (Generator::check_options), so a
/// bad patch is refused before any work; none for an empty patch (the defaults). The generator
/// is left as it is: the options travel with each sample request.
std::optional<GenerationOptions> sampling_from_patch(const Generator& generator,
                                                     const std::string& patch);

/// The sampling options and the schedule section they run with (`schedule_config`'s section with
/// the options' schedule sampling options in place of its defaults), as one JSON line.
std::string sampling_summary(const GenerationOptions& options,
                             const ScheduleConfig& schedule_config);

}  // namespace tessera::cli
