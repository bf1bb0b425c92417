// `tessera eval`: FID-FM and conditional accuracy of a generator's samples beside the floors, or
// the floors of a tokenizer alone.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "command.h"
#include "command_util.h"
#include "results_file.h"
#include "tessera/core/error.h"
#include "tessera/eval/classifier.h"
#include "tessera/eval/evaluation.h"
#include "tessera/eval/generator_evaluation.h"
#include "tessera/nn/inference_precision.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera::cli {

namespace {

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
  std::string precision = "fp32";  // fp32, bf16, int8 or auto (tessera/nn/inference_precision.h)
  std::string json;          // results file to write ("" = none; results_file.h)
  std::string command_line;  // recorded in the results file
};

Classifier classifier_to_judge_with(const EvalOptions& options) {
  return load_classifier(options.classifier.empty() ? default_classifier_path()
                                                    : std::filesystem::path(options.classifier));
}

// `tessera eval --tokenizer`: the floors of a tokenizer alone (FID-FM of its reconstructions of
// the test images against the training images, beside the real test images' FID-FM).
void run_eval_tokenizer(const EvalOptions& options) {
  Classifier classifier = classifier_to_judge_with(options);
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer_checkpoint(options.tokenizer);
  const int64_t size = classifier.config().image_size;
  const int64_t channels = tokenizer->image_channels();
  at::Tensor test_labels;
  const at::Tensor train = prepared_split(DatasetSplit::train, options.data, size, channels);
  const at::Tensor test =
      prepared_split(DatasetSplit::test, options.data, size, channels, &test_labels);
  const QualityFloors floors =
      quality_floors(classifier, train, test, test_labels, tokenizer.get());
  std::printf("%s: %s\n", options.tokenizer.c_str(),
              format_quality_report(std::nullopt, std::nullopt, floors).c_str());
}

void run_eval(const EvalOptions& options) {
  set_threads(options.threads);
  TESSERA_CHECK(options.model.empty() != options.tokenizer.empty(),
                "tessera eval: give exactly one of --model (a generator) and --tokenizer");
  if (!options.tokenizer.empty()) {
    run_eval_tokenizer(options);
    return;
  }
  const InferencePrecision precision = parse_inference_precision(options.precision, at::kCPU);
  Generator generator = Generator::load(options.model);
  Classifier classifier = classifier_to_judge_with(options);
  const int64_t size = generator.config().image_size;
  const int64_t channels = generator.config().image_channels;
  at::Tensor test_labels;
  const at::Tensor train = prepared_split(DatasetSplit::train, options.data, size, channels);
  const at::Tensor test =
      prepared_split(DatasetSplit::test, options.data, size, channels, &test_labels);
  const QualityFloors floors =
      quality_floors(classifier, train, test, test_labels, &generator.tokenizer());
  const GaussianStats reference = feature_statistics(classifier, train);
  // After the floors: they judge the tokenizer itself, in float32.
  if (precision != InferencePrecision::fp32) {
    generator.set_precision(precision);
    std::printf("sampling precision: %s\n", std::string(to_string(precision)).c_str());
  }
  const std::optional<GenerationOptions> sampling =
      sampling_from_patch(generator, options.sampling);
  if (sampling) {
    std::printf("sampling options: %s\n",
                sampling_summary(*sampling, generator.config().schedule).c_str());
  }
  const BulkSamples samples = sample_in_bulk(generator, {.count = options.samples,
                                                         .batch_size = options.batch_size,
                                                         .seed = options.seed,
                                                         .options = sampling});
  const GeneratorQuality quality = judge_samples(classifier, samples, reference);
  std::printf("%s: %s schedule, %s head, %lld samples, %.1f ms per image\n",
              options.model.c_str(), generator.schedule().name().c_str(),
              head_name(generator).c_str(), static_cast<long long>(quality.samples),
              quality.milliseconds_per_image);
  std::printf("%s\n",
              format_quality_report(quality.fid_fm, quality.conditional_accuracy, floors).c_str());
  if (!options.json.empty()) {
    nlohmann::ordered_json results = results_header(options.command_line);
    results["sampling"] = options.sampling.empty()
                              ? nlohmann::ordered_json(nullptr)
                              : nlohmann::ordered_json::parse(options.sampling);
    results["batch_size"] = options.batch_size;
    results["precision"] = std::string(to_string(precision));
    results["result"] = generator_results(std::filesystem::path(options.model).stem().string(),
                                          generator, samples, quality, options.seed);
    // generator_results counts the steps of the generator's defaults; --sampling may change them.
    if (sampling) {
      results["result"]["steps"] =
          generator.schedule().num_steps(generator.token_grids(), *sampling);
    }
    results["floors"] = {{"reference_images", floors.reference_images},
                         {"test_images", floors.test_images},
                         {"fid_fm_test_vs_train", floors.fid_test_vs_train},
                         {"fid_fm_reconstructions_vs_train",
                          floors.fid_reconstruction_vs_train.value_or(0.0)},
                         {"classifier_test_accuracy", floors.test_accuracy.value_or(0.0)}};
    write_results_file(options.json, results);
    std::printf("wrote %s\n", options.json.c_str());
  }
}

}  // namespace

void setup_eval(CLI::App& app, const CommandContext& context) {
  auto* eval = app.add_subcommand("eval", "FID-FM and conditional accuracy of a generator, with the floors");
  auto options = std::make_shared<EvalOptions>();
  options->command_line = context.command_line;
  eval->add_option("--model", options->model, "generator file")->check(CLI::ExistingFile);
  eval->add_option("--tokenizer", options->tokenizer,
                   "instead of --model: a tokenizer checkpoint; prints the floors (FID-FM of its reconstructions)")
      ->check(CLI::ExistingFile);
  eval->add_option("--samples", options->samples, "samples to judge")->capture_default_str();
  eval->add_option("--batch-size", options->batch_size, "samples per sampling call")->capture_default_str();
  eval->add_option("--seed", options->seed, "sampling seed")->capture_default_str();
  eval->add_option("--classifier", options->classifier,
                   "evaluation classifier (default: $TESSERA_CLASSIFIER, else models/classifier_fashion_mnist.safetensors)");
  eval->add_option("--data", options->data, "Fashion-MNIST folder");
  eval->add_option("--sampling", options->sampling, kSamplingPatchHelp);
  eval->add_option("--threads", options->threads, "intra-op threads, 0 = LibTorch's default");
  eval->add_option("--precision", options->precision,
                   "sampling precision: fp32, bf16, int8 or auto (as tessera sample "
                   "--precision); the floors stay fp32")
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "auto"}))
      ->capture_default_str();
  eval->add_option("--json", options->json,
                   "also write the figures to this JSON file (scripts/update-results reads such "
                   "files)");
  eval->callback([options] { run_eval(*options); });
}

}  // namespace tessera::cli
