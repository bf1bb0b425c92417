#include "results_file.h"

#include <chrono>
#include <ctime>

#include "tessera/core/atomic_file.h"
#include "tessera/core/config.h"
#include "tessera/core/machine.h"
#include "tessera/version.h"

namespace tessera::cli {

nlohmann::ordered_json results_header(const std::string& command_line) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[16];
  std::strftime(date, sizeof date, "%Y-%m-%d", &utc);
  nlohmann::ordered_json header;
  header["command"] = command_line;
  header["tessera"] = TESSERA_VERSION_STRING;
  header["date"] = date;
  header["machine"] = machine_json(describe_machine());
  return header;
}

nlohmann::ordered_json generator_results(const std::string& model, Generator& generator,
                                         const BulkSamples& samples,
                                         const GeneratorQuality& quality, uint64_t seed) {
  nlohmann::ordered_json row;
  row["model"] = model;
  row["schedule"] = generator.schedule().name();
  row["head"] = config_to_json(generator.config().head)["kind"];
  row["steps"] = generator.schedule().num_steps(generator.token_grids());
  row["samples"] = quality.samples;
  row["seed"] = seed;
  row["ms_per_image"] = quality.milliseconds_per_image;
  row["fid_fm"] = quality.fid_fm;
  row["fid_fm_standard_error"] = quality.fid_fm_standard_error;
  row["accuracy"] = quality.conditional_accuracy
                        ? nlohmann::ordered_json(*quality.conditional_accuracy)
                        : nlohmann::ordered_json(nullptr);
  row["samples_digest"] = samples_digest(samples);
  return row;
}

void write_results_file(const std::filesystem::path& path, const nlohmann::ordered_json& json) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  write_file_atomically(path, json.dump(2) + "\n");
}

}  // namespace tessera::cli
