// The `tessera` command line.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/fashion_mnist.h"
#include "tessera/core/heap_reuse.h"
#include "tessera/core/image_io.h"
#include "tessera/core/logging.h"
#include "tessera/tokenizer/tokenizer_training.h"
#include "tessera/version.h"
#include "generator_commands.h"

namespace {

constexpr const char* kSamplingPatchHelp =
    "JSON merge patch over the generator's sampling defaults and its schedule's sampling options, "
    "e.g. '{\"guidance\": {\"scale\": 4}, \"schedule\": {\"steps\": 4}}'";

struct PixelStatistics {
  double mean = 0;
  double std = 0;
};

// Mean and standard deviation on the 0..255 scale, exact: from a 256-bin histogram summed in
// integers, which also avoids a float copy of 47 million pixels.
PixelStatistics pixel_statistics(const at::Tensor& images) {
  const at::Tensor contiguous = images.contiguous();
  const uint8_t* pixels = contiguous.data_ptr<uint8_t>();
  std::array<int64_t, 256> histogram{};
  for (int64_t i = 0, n = contiguous.numel(); i < n; ++i) ++histogram[pixels[i]];
  double count = 0, sum = 0, sum_of_squares = 0;
  for (int value = 0; value < 256; ++value) {
    const auto h = static_cast<double>(histogram[value]);
    count += h;
    sum += h * value;
    sum_of_squares += h * value * value;
  }
  if (count == 0) return {};
  const double mean = sum / count;
  return {mean, std::sqrt(std::max(0.0, sum_of_squares / count - mean * mean))};
}

// The first `per_class` examples of each class, class by class: one grid row per class.
at::Tensor examples_by_class(const tessera::LabeledImages& data, int64_t per_class) {
  std::vector<at::Tensor> rows;
  for (int64_t label = 0; label < static_cast<int64_t>(data.class_names.size()); ++label) {
    const at::Tensor indices = at::nonzero(data.labels == label).flatten().slice(0, 0, per_class);
    TESSERA_CHECK(indices.numel() == per_class,
                  "class {} ('{}') has {} examples, the grid needs {}", label,
                  data.class_names[static_cast<size_t>(label)], indices.numel(), per_class);
    rows.push_back(data.images.index_select(0, indices));
  }
  return at::cat(rows);
}

// `tessera demo`: stage-1 demo. Loads Fashion-MNIST, prints its statistics, writes a preview grid.
void run_demo(const std::filesystem::path& out_dir, const std::string& data_dir) {
  tessera::FashionMnistOptions options;
  options.directory = data_dir;
  const auto start = std::chrono::steady_clock::now();
  const tessera::LabeledImages train =
      tessera::load_fashion_mnist(tessera::DatasetSplit::train, options);
  const tessera::LabeledImages test =
      tessera::load_fashion_mnist(tessera::DatasetSplit::test, options);
  TESSERA_LOG_INFO("loaded Fashion-MNIST ({} + {} images) in {:.2f} s", train.size(), test.size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

  const std::filesystem::path shown_dir = data_dir.empty()
                                              ? tessera::default_fashion_mnist_directory()
                                              : std::filesystem::path(data_dir);
  std::printf("Fashion-MNIST (%s), images %lldx%lld, %zu classes\n\n", shown_dir.c_str(),
              static_cast<long long>(train.images.size(2)),
              static_cast<long long>(train.images.size(3)), train.class_names.size());

  std::printf("%-6s %8s %12s %12s\n", "split", "images", "pixel mean", "pixel std");
  for (const auto& [name, data] : {std::pair{"train", &train}, std::pair{"test", &test}}) {
    const PixelStatistics stats = pixel_statistics(data->images);
    std::printf("%-6s %8lld %12.2f %12.2f\n", name, static_cast<long long>(data->size()),
                stats.mean, stats.std);
  }
  std::printf("(pixel values on 0..255)\n\n");

  const at::Tensor train_counts =
      at::bincount(train.labels, {}, static_cast<int64_t>(train.class_names.size()));
  const at::Tensor test_counts =
      at::bincount(test.labels, {}, static_cast<int64_t>(test.class_names.size()));
  std::printf("%-5s %-12s %8s %8s\n", "label", "class", "train", "test");
  for (size_t label = 0; label < train.class_names.size(); ++label) {
    const auto index = static_cast<int64_t>(label);
    std::printf("%-5zu %-12s %8lld %8lld\n", label, train.class_names[label].c_str(),
                static_cast<long long>(train_counts[index].item<int64_t>()),
                static_cast<long long>(test_counts[index].item<int64_t>()));
  }

  constexpr int64_t kExamplesPerClass = 10;
  const std::filesystem::path grid_path = out_dir / "fashion-mnist.png";
  tessera::write_image_grid(
      grid_path, examples_by_class(train, kExamplesPerClass),
      {.columns = kExamplesPerClass, .padding = 2, .pad_value = 96, .upscale = 2});
  std::printf("\nwrote %s (one row per class, first %lld training images of each)\n",
              grid_path.c_str(), static_cast<long long>(kExamplesPerClass));
}

// Command-line overrides of a tokenizer training config; unset options keep the file's values.
struct TrainTokenizerOverrides {
  std::string config_path;
  std::string out;
  std::string data;
  int64_t steps = -1;
  int64_t threads = -1;
  bool resume = false;
};

// `tessera train-tokenizer`: trains as configured and prints the test-split reconstruction metrics.
void run_train_tokenizer(const TrainTokenizerOverrides& options) {
  auto config = tessera::load_config<tessera::TokenizerTrainConfig>(options.config_path);
  if (!options.out.empty()) config.output_dir = options.out;
  if (!options.data.empty()) config.data.directory = options.data;
  if (options.steps >= 0) config.steps = options.steps;
  if (options.threads >= 0) config.threads = options.threads;
  if (options.resume) config.resume = true;
  const tessera::TokenizerTrainResult result = tessera::train_tokenizer(config);
  std::printf("trained %lld steps in %.1f s (final loss %.5f)\ncheckpoint: %s\n",
              static_cast<long long>(result.steps), result.train_seconds, result.final_loss,
              result.checkpoint.c_str());
  std::printf("%s\n", tessera::format_reconstruction_metrics(result.test).c_str());
}

// The command as typed, for results files: arguments joined by spaces, those holding anything
// but [A-Za-z0-9_./=:,+-] single-quoted.
std::string command_line(int argc, char** argv) {
  std::string line;
  for (int i = 0; i < argc; ++i) {
    std::string arg = i == 0 ? std::filesystem::path(argv[0]).filename().string() : argv[i];
    const bool plain = !arg.empty() && arg.find_first_not_of(
                                           "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789_./=:,+-") == std::string::npos;
    if (!plain) {
      std::string quoted = "'";
      for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      arg = quoted + "'";
    }
    line += (i == 0 ? "" : " ") + arg;
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  const auto command_start = std::chrono::steady_clock::now();
  CLI::App app{"Tessera: masked and autoregressive generative modeling on LibTorch"};
  app.set_version_flag("--version", "tessera " TESSERA_VERSION_STRING);
  app.require_subcommand(1);
  auto* info = app.add_subcommand(
      "info", "print the build configuration, or a preset's architecture and parameter counts");
  std::string info_preset;
  info->add_option("--preset", info_preset,
                   "a preset name (var-d16 … var-d30, hmar-d16 … hmar-d30): its architecture and "
                   "parameter counts, computed from the config");

  auto* demo =
      app.add_subcommand("demo", "load Fashion-MNIST, print its statistics, write a preview grid");
  std::string demo_out = "out/demo";
  std::string demo_data;
  demo->add_option("--out", demo_out, "folder for the demo's images")->capture_default_str();
  demo->add_option("--data", demo_data,
                   "Fashion-MNIST folder (default: $TESSERA_FASHION_MNIST_DIR, else "
                   "/usr/share/datasets/fashion-mnist)");

  auto* train_tokenizer = app.add_subcommand(
      "train-tokenizer", "train a tokenizer on Fashion-MNIST and measure its reconstructions");
  TrainTokenizerOverrides tokenizer_options;
  train_tokenizer->add_option("--config", tokenizer_options.config_path,
                              "training config (JSON), e.g. configs/tokenizer/vq_vae_fashion_mnist.json")
      ->required()
      ->check(CLI::ExistingFile);
  train_tokenizer->add_option("--out", tokenizer_options.out,
                              "output folder (default: the config's output_dir)");
  train_tokenizer->add_option("--data", tokenizer_options.data,
                              "Fashion-MNIST folder (default: the config's data.directory)");
  train_tokenizer->add_option("--steps", tokenizer_options.steps,
                              "training steps (default: the config's steps)");
  train_tokenizer->add_option("--threads", tokenizer_options.threads,
                              "intra-op threads, 0 = LibTorch's default (default: the config's)");
  train_tokenizer->add_flag("--resume", tokenizer_options.resume,
                            "continue from <out>/tokenizer.safetensors if it exists");

  auto* train = app.add_subcommand(
      "train", "train a generator (tokenizer frozen; backbone, head and schedule from the config)");
  tessera::cli::TrainOptions train_options;
  train->add_option("--config", train_options.config_path,
                    "generator training config (JSON), e.g. configs/generator/maskgit_fashion_mnist.json")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("--out", train_options.out, "output folder (default: the config's trainer.output_dir)");
  train->add_option("--data", train_options.data, "Fashion-MNIST folder (default: the config's data.directory)");
  train->add_option("--steps", train_options.steps, "optimizer steps (default: the config's trainer.steps)");
  train->add_option("--threads", train_options.threads, "intra-op threads, 0 = LibTorch's default");
  train->add_flag("--fresh", train_options.fresh,
                  "start from scratch even when <out>/checkpoint.safetensors exists (default: resume)");

  auto* sample = app.add_subcommand("sample", "sample a class-conditional grid from a generator");
  tessera::cli::SampleOptions sample_options;
  auto* sample_model =
      sample->add_option("--model", sample_options.model,
                         "generator file (tessera train's generator.safetensors)")
          ->check(CLI::ExistingFile);
  auto* sample_config =
      sample->add_option("--config", sample_options.config,
                         "instead of --model: a `tessera train` config; samples its generator with "
                         "freshly initialised weights (for speed and memory measurements)")
          ->check(CLI::ExistingFile);
  sample_model->excludes(sample_config);
  auto* sample_preset = sample->add_option(
      "--preset", sample_options.preset,
      "instead of --model: a preset (var-d16 … var-d30, hmar-d16 … hmar-d30) with --weights and --vae, "
      "or random weights without them (for speed and memory measurements)");
  sample_preset->excludes(sample_model)->excludes(sample_config);
  auto* sample_weights =
      sample->add_option("--weights", sample_options.weights,
                         "the transformer's reference checkpoint (VAR's or HMAR's key names, converted by "
                         "tools/convert_checkpoint.py); without --preset its __metadata__ must "
                         "describe the architecture (docs/compat.md)")
          ->check(CLI::ExistingFile);
  sample_weights->excludes(sample_model)->excludes(sample_config);
  sample->add_option("--vae", sample_options.vae,
                     "with --preset or --weights: VAR's VQ-VAE checkpoint (vae_ch160v4096z32, "
                     "converted); random weights without it")
      ->check(CLI::ExistingFile)
      ->excludes(sample_model)
      ->excludes(sample_config);
  sample->add_option("--classes", sample_options.classes,
                     "comma-separated class ids, one grid row each (default: every class; "
                     "required for generators with more than 16 classes)")
      ->delimiter(',');
  sample->add_flag("--reference-seeding", sample_options.reference_seeding,
                   "draw as VAR's sampler does: one generator seeded with --seed for the whole "
                   "grid, torch 1.13's multinomial (docs/compat.md); default: one stream per "
                   "sample");
  sample->add_option("--out", sample_options.out, "PNG grid to write")->capture_default_str();
  sample->add_option("--per-class", sample_options.per_class, "samples per class (grid columns)")
      ->capture_default_str();
  sample->add_option("--seed", sample_options.seed, "sampling seed")->capture_default_str();
  sample->add_option("--save-tokens", sample_options.save_tokens,
                     "also write the sampled tokens and labels to this safetensors file");
  sample->add_option("--sampling", sample_options.sampling,
                     kSamplingPatchHelp);
  sample->add_option("--threads", sample_options.threads, "intra-op threads, 0 = LibTorch's default");

  auto* eval = app.add_subcommand("eval", "FID-FM and conditional accuracy of a generator, with the floors");
  tessera::cli::EvalOptions eval_options;
  eval->add_option("--model", eval_options.model, "generator file")->check(CLI::ExistingFile);
  eval->add_option("--tokenizer", eval_options.tokenizer,
                   "instead of --model: a tokenizer checkpoint; prints the floors (FID-FM of its reconstructions)")
      ->check(CLI::ExistingFile);
  eval->add_option("--samples", eval_options.samples, "samples to judge")->capture_default_str();
  eval->add_option("--batch-size", eval_options.batch_size, "samples per sampling call")->capture_default_str();
  eval->add_option("--seed", eval_options.seed, "sampling seed")->capture_default_str();
  eval->add_option("--classifier", eval_options.classifier,
                   "evaluation classifier (default: $TESSERA_CLASSIFIER, else models/classifier_fashion_mnist.safetensors)");
  eval->add_option("--data", eval_options.data, "Fashion-MNIST folder");
  eval->add_option("--sampling", eval_options.sampling,
                   kSamplingPatchHelp);
  eval->add_option("--threads", eval_options.threads, "intra-op threads, 0 = LibTorch's default");

  auto* convert = app.add_subcommand(
      "convert", "cast a weights file to another dtype, or extract the generator of a training checkpoint");
  tessera::cli::ConvertOptions convert_options;
  auto* convert_in =
      convert->add_option("--in", convert_options.in,
                          "a Tessera safetensors file (generator, tokenizer, classifier) to cast to --dtype")
          ->check(CLI::ExistingFile);
  auto* convert_checkpoint =
      convert->add_option("--checkpoint", convert_options.checkpoint,
                          "instead of --in: a `tessera train` checkpoint.safetensors; writes its generator")
          ->check(CLI::ExistingFile);
  convert_in->excludes(convert_checkpoint);
  convert->add_option("--tokenizer", convert_options.tokenizer,
                      "with --checkpoint: the tokenizer the run was trained on (checkpoints do not carry it)")
      ->check(CLI::ExistingFile);
  convert->add_option("--weights", convert_options.weights, "with --checkpoint: ema or trained")
      ->check(CLI::IsMember({"ema", "trained"}))
      ->capture_default_str();
  convert->add_option("--dtype", convert_options.dtype,
                      "bf16, fp16 or fp32 for the written tensors (default: --in keeps its dtypes, "
                      "--checkpoint writes fp32)");
  convert->add_option("--sampling", convert_options.sampling,
                      "JSON merge patch stored as the written generator's new sampling defaults (as --sampling of sample and eval: guidance, head, schedule)");
  convert->add_option("--out", convert_options.out, "file to write")->required();

  int64_t demo_samples = 2000;
  demo->add_option("--samples", demo_samples, "samples per model for FID-FM and accuracy")->capture_default_str();
  std::string demo_json;
  demo->add_option("--json", demo_json,
                   "results file to write (default: demo.json in --out); scripts/update-results "
                   "builds the README's table from it");
  eval->add_option("--json", eval_options.json,
                   "also write the figures to this JSON file (scripts/update-results reads such "
                   "files)");
  eval_options.command_line = command_line(argc, argv);

  CLI11_PARSE(app, argc, argv);
  // Every subcommand allocates the same activations step after step (Note [Heap reuse]).
  const tessera::HeapReuseReport heap = tessera::keep_freed_heap_memory();
  try {
    if (*info && !info_preset.empty()) {
      tessera::cli::run_info_preset(info_preset);
    } else if (*info) {
      std::printf("tessera %s\n%s", TESSERA_VERSION_STRING, at::get_parallel_info().c_str());
      std::printf("heap reuse (Note [Heap reuse]): %s%s\n", heap.applied ? "on" : "off: ",
                  heap.reason);
    } else if (*demo) {
      run_demo(demo_out, demo_data);
      const int64_t models = tessera::cli::run_demo_models({.out_dir = demo_out,
                                                           .data = demo_data,
                                                           .samples = demo_samples,
                                                           .json = demo_json,
                                                           .command_line = command_line(argc, argv),
                                                           .command_start = command_start});
      if (models == 0) std::printf("\nno generators in models/ yet: nothing to sample\n");
    } else if (*train) {
      tessera::cli::run_train(train_options);
    } else if (*sample) {
      tessera::cli::run_sample(sample_options);
    } else if (*eval) {
      tessera::cli::run_eval(eval_options);
    } else if (*convert) {
      tessera::cli::run_convert(convert_options);
    } else if (*train_tokenizer) {
      run_train_tokenizer(tokenizer_options);
    }
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "tessera: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    // LibTorch and the standard library throw their own types; a message beats an abort.
    std::fprintf(stderr, "tessera: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
