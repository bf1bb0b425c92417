#include "command_util.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/pipeline/sampling_request.h"
#include "tessera/schedule/schedule_config.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera::cli {

void set_threads(int64_t threads) {
  TESSERA_CHECK(threads >= 0, "--threads must be >= 0 (0 keeps LibTorch's default), got {}",
                threads);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
}

std::string head_name(const Generator& generator) {
  return config_to_json(generator.config().head)["kind"].get<std::string>();
}

at::Tensor prepared_split(DatasetSplit split, const std::string& data_dir, int64_t image_size,
                          int64_t channels, at::Tensor* labels) {
  FashionMnistOptions options;
  options.directory = data_dir;
  const LabeledImages data = load_fashion_mnist(split, options);
  if (labels != nullptr) *labels = data.labels;
  return prepare_fashion_mnist_images(data, image_size, channels);
}

std::optional<GenerationOptions> sampling_from_patch(const Generator& generator,
                                                     const std::string& patch) {
  if (patch.empty()) return std::nullopt;
  GenerationOptions options = sampling_request(generator.config(), patch);
  generator.check_options(options);
  return options;
}

std::string sampling_summary(const GenerationOptions& options,
                             const ScheduleConfig& schedule_config) {
  nlohmann::json summary = config_to_json(options);
  ScheduleConfig with_options = schedule_config;
  set_sampling_defaults(with_options, options.schedule);
  const nlohmann::json schedule = config_to_json(with_options);
  summary["schedule"] = schedule[schedule["kind"].get<std::string>()];
  return summary.dump();
}

}  // namespace tessera::cli
