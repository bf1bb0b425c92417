// `tessera demo`: Fashion-MNIST's statistics and a preview grid, then every shipped generator in
// models/ sampled into a grid and judged (FID-FM, accuracy), with a results file.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.h"
#include "command_util.h"
#include "results_file.h"
#include "tessera/core/error.h"
#include "tessera/core/logging.h"
#include "tessera/eval/classifier.h"
#include "tessera/eval/evaluation.h"
#include "tessera/eval/generator_evaluation.h"
#include "tessera/io/safetensors.h"

namespace tessera::cli {

namespace {

struct DemoOptions {
  std::filesystem::path models_dir = "models";
  std::string out = "out/demo";
  std::string data;
  int64_t samples = 2000;
  int64_t per_class = 10;
  uint64_t seed = 0;
  std::string json;  // results file ("" = out/demo.json; results_file.h)
  CommandContext context;
};

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
at::Tensor examples_by_class(const LabeledImages& data, int64_t per_class) {
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

// The data set's part: loads Fashion-MNIST, prints its statistics, writes a preview grid.
void show_dataset(const std::filesystem::path& out_dir, const std::string& data_dir) {
  FashionMnistOptions options;
  options.directory = data_dir;
  const auto start = std::chrono::steady_clock::now();
  const LabeledImages train = load_fashion_mnist(DatasetSplit::train, options);
  const LabeledImages test = load_fashion_mnist(DatasetSplit::test, options);
  TESSERA_LOG_INFO("loaded Fashion-MNIST ({} + {} images) in {:.2f} s", train.size(), test.size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

  const std::filesystem::path shown_dir =
      data_dir.empty() ? default_fashion_mnist_directory() : std::filesystem::path(data_dir);
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
  write_image_grid(grid_path, examples_by_class(train, kExamplesPerClass),
                   {.columns = kExamplesPerClass, .padding = 2, .pad_value = 96, .upscale = 2});
  std::printf("\nwrote %s (one row per class, first %lld training images of each)\n",
              grid_path.c_str(), static_cast<long long>(kExamplesPerClass));
}

// Samples per sampling call in the demo (the samples do not depend on it). One grid's worth (100)
// suits the schedules whose calls run every position of every sample; raster decoding with a KV
// cache runs one position per sample per call, where 100 samples leave the calls too small to
// amortise each step's fixed costs (measured in docs/models.md).
int64_t demo_batch_size(const Generator& generator, int64_t grid_size) {
  const ScheduleConfig& schedule = generator.config().schedule;
  const bool token_by_token =
      schedule.kind == ScheduleKind::raster && schedule.raster.sampling.kv_cache;
  return token_by_token ? 5 * grid_size : grid_size;
}

// Samples a grid from every generator in models_dir into out/<model>.png, evaluates each on
// `samples` samples, prints the table and writes the results file. Returns the number of
// generators found.
int64_t show_models(const DemoOptions& options) {
  const std::filesystem::path out_dir = options.out;
  std::vector<std::filesystem::path> models;
  if (std::filesystem::is_directory(options.models_dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(options.models_dir)) {
      if (entry.path().extension() != ".safetensors") continue;
      const SafetensorsFile file = SafetensorsFile::open(entry.path());
      if (file.metadata().contains("tessera.generator_config")) models.push_back(entry.path());
    }
  }
  std::sort(models.begin(), models.end());
  if (models.empty()) return 0;

  Classifier classifier = load_classifier(default_classifier_path());
  std::optional<GaussianStats> reference;
  struct Row {
    std::string model, schedule, head;
    int64_t steps;
    GeneratorQuality quality;
  };
  std::vector<Row> rows;
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const auto& path : models) {
    Generator generator = Generator::load(path);
    if (!reference) {
      reference = feature_statistics(
          classifier, prepared_split(DatasetSplit::train, options.data,
                                     generator.config().image_size,
                                     generator.config().image_channels));
    }
    const std::string name = path.stem().string();
    // The grid is the first batch of the judged samples: the same images `tessera sample` draws
    // (BulkSampleOptions::class_rows_first), without sampling them twice.
    const int64_t grid_size = options.per_class * generator.num_classes();
    TESSERA_CHECK(options.samples >= grid_size,
                  "tessera demo: --samples {} is fewer than the grid's {} images", options.samples,
                  grid_size);
    const BulkSamples samples = sample_in_bulk(generator, {.count = options.samples,
                                                           .batch_size = demo_batch_size(
                                                               generator, grid_size),
                                                           .seed = options.seed,
                                                           .class_rows_first = options.per_class});
    const std::filesystem::path grid_path = out_dir / (name + ".png");
    write_image_grid(grid_path, samples.images.slice(0, 0, grid_size), kClassGrid);
    rows.push_back({name, generator.schedule().name(), head_name(generator),
                    generator.schedule().num_steps(generator.token_grids()),
                    judge_samples(classifier, samples, *reference)});
    results.push_back(generator_results(name, generator, samples, rows.back().quality,
                                        options.seed));
    std::printf("wrote %s\n", grid_path.c_str());
  }
  std::printf("\n%-28s %-11s %-14s %6s %12s %8s %9s\n", "model", "schedule", "head", "steps",
              "ms per image", "FID-FM", "accuracy");
  for (const Row& row : rows) {
    std::printf("%-28s %-11s %-14s %6lld %12.1f %8.2f %8.1f%%\n", row.model.c_str(),
                row.schedule.c_str(), row.head.c_str(), static_cast<long long>(row.steps),
                row.quality.milliseconds_per_image, row.quality.fid_fm,
                100.0 * row.quality.conditional_accuracy.value_or(0.0));
  }
  nlohmann::ordered_json file = results_header(options.context.command_line);
  file["samples"] = options.samples;
  file["seed"] = options.seed;
  file["wall_seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - options.context.start)
          .count();
  file["models"] = results;
  const std::filesystem::path json =
      options.json.empty() ? out_dir / "demo.json" : std::filesystem::path(options.json);
  write_results_file(json, file);
  std::printf("\nwrote %s\n", json.c_str());
  return static_cast<int64_t>(rows.size());
}

}  // namespace

void setup_demo(CLI::App& app, const CommandContext& context) {
  auto* demo = app.add_subcommand(
      "demo", "load Fashion-MNIST, print its statistics, write a preview grid");
  auto options = std::make_shared<DemoOptions>();
  options->context = context;
  demo->add_option("--out", options->out, "folder for the demo's images")->capture_default_str();
  demo->add_option("--data", options->data,
                   "Fashion-MNIST folder (default: $TESSERA_FASHION_MNIST_DIR, else "
                   "/usr/share/datasets/fashion-mnist)");
  demo->add_option("--samples", options->samples, "samples per model for FID-FM and accuracy")
      ->capture_default_str();
  demo->add_option("--json", options->json,
                   "results file to write (default: demo.json in --out); scripts/update-results "
                   "builds the README's table from it");
  demo->callback([options] {
    show_dataset(options->out, options->data);
    if (show_models(*options) == 0) std::printf("\nno generators in models/ yet: nothing to sample\n");
  });
}

}  // namespace tessera::cli
