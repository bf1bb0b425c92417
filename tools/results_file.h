#pragma once
// The JSON results files that `tessera demo` and `tessera eval` write beside their printed tables.
// scripts/update-results builds the tables in README.md and docs/ from such files (kept under
// docs/results/), and the quality check (tests/quality) compares a fresh demo's file with the
// recorded one. Every file starts with the same header: what was run, when, on what.

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "tessera/pipeline/generator.h"
#include "tessera/eval/generator_evaluation.h"

namespace tessera::cli {

/// {"command", "tessera" (version), "date" (UTC, YYYY-MM-DD), "machine" (machine.h)}.
nlohmann::ordered_json results_header(const std::string& command_line);

/// One generator's figures: model, schedule, head, steps, samples, seed, ms_per_image, fid_fm,
/// fid_fm_standard_error, accuracy (null when unconditional), samples_digest.
nlohmann::ordered_json generator_results(const std::string& model, Generator& generator,
                                         const BulkSamples& samples,
                                         const GeneratorQuality& quality, uint64_t seed);

/// Writes `json` to `path` atomically (creating its folder), two-space indented.
void write_results_file(const std::filesystem::path& path, const nlohmann::ordered_json& json);

}  // namespace tessera::cli
