#pragma once
// The `tessera` subcommands that train, sample and evaluate generators, and the demo's model
// tour. Each function is one subcommand; main() parses the options into these structs.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tessera::cli {

struct TrainOptions {
  std::string config_path;
  std::string out;
  std::string data;
  int64_t steps = -1;
  int64_t threads = -1;
  bool fresh = false;  // ignore an existing checkpoint instead of resuming
};
void run_train(const TrainOptions& options);

struct SampleOptions {
  std::string model;   // a generator file, or
  std::string config;  // a `tessera train` config: its generator with freshly initialised weights
  std::string preset;   // a preset (generator_preset), with or without weights
  std::string weights;  // reference transformer weights (VAR's key names)
  std::string vae;      // reference VQ-VAE weights (VAR's key names)
  std::string out = "out/samples.png";
  int64_t per_class = 10;  // grid: per_class samples of each class
  std::vector<int64_t> classes;  // grid rows; empty: every class
  uint64_t seed = 0;
  bool reference_seeding = false;  // SampleRequest::reference_seeding
  std::string save_tokens;  // safetensors file for the token ids / vectors ("" = none)
  std::string sampling;     // JSON merge patch over the generator's sampling defaults ("" = none)
  int64_t threads = 0;
};
void run_sample(const SampleOptions& options);

struct EvalOptions {
  std::string model;      // a generator file, or
  std::string tokenizer;  // a tokenizer checkpoint: only the floors (its reconstructions)
  int64_t samples = 2000;
  int64_t batch_size = 100;
  uint64_t seed = 0;
  std::string classifier;  // "" = default_classifier_path()
  std::string sampling;    // JSON merge patch over the generator's sampling defaults
  std::string data;
  int64_t threads = 0;
  std::string json;          // results file to write ("" = none; results_file.h)
  std::string command_line;  // recorded in the results file
};
void run_eval(const EvalOptions& options);

struct ConvertOptions {
  std::string in;          // a safetensors file to cast, or
  std::string checkpoint;  // a `tessera train` checkpoint to extract the generator from
  std::string tokenizer;   // with checkpoint: the run's tokenizer
  std::string weights = "ema";
  std::string dtype;      // "" keeps the stored dtypes (--in) or fp32 (--checkpoint)
  std::string sampling;  // JSON merge patch stored as the written generator's sampling defaults
  std::string out;
};
void run_convert(const ConvertOptions& options);

// `tessera info --preset NAME`: the preset's architecture and parameter counts (from the configs,
// nothing is allocated), against the published size.
void run_info_preset(const std::string& name);

struct DemoModelsOptions {
  std::filesystem::path models_dir = "models";
  std::filesystem::path out_dir = "out/demo";
  std::string data;
  int64_t samples = 2000;
  int64_t per_class = 10;
  uint64_t seed = 0;
  std::filesystem::path json;  // results file ("" = out_dir/demo.json; results_file.h)
  std::string command_line;    // recorded in the results file
  // When the command started: the results file records the whole command's wall time.
  std::chrono::steady_clock::time_point command_start = std::chrono::steady_clock::now();
};
// Samples a grid from every generator in models_dir into out_dir/<model>.png, evaluates each on
// `samples` samples, prints the table and writes the results file. Returns the number of
// generators found.
int64_t run_demo_models(const DemoModelsOptions& options);

}  // namespace tessera::cli
