#include "generator_commands.h"

#include "results_file.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/fashion_mnist.h"
#include "tessera/core/format.h"
#include "tessera/core/image_io.h"
#include "tessera/core/logging.h"
#include "tessera/core/safetensors.h"
#include "tessera/pipeline/classifier.h"
#include "tessera/pipeline/evaluation.h"
#include "tessera/pipeline/generator.h"
#include "tessera/pipeline/generator_evaluation.h"
#include "tessera/pipeline/generator_training.h"
#include "tessera/pipeline/presets.h"
#include "tessera/pipeline/sampling_patch.h"
#include "tessera/pipeline/weights_conversion.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera::cli {

namespace {

constexpr ImageGridOptions kClassGrid{.columns = 10, .padding = 2, .pad_value = 96, .upscale = 2};

void set_threads(int64_t threads) {
  TESSERA_CHECK(threads >= 0, "--threads must be >= 0 (0 keeps LibTorch's default), got {}",
                threads);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
}

// The schedule, head and step count a table row shows.
std::string head_name(const Generator& generator) {
  return config_to_json(generator.config().head)["kind"].get<std::string>();
}

// Fashion-MNIST split prepared like the tokenizers' inputs (padded to the generator's size).
at::Tensor prepared_split(DatasetSplit split, const std::string& data_dir, int64_t image_size,
                          int64_t channels, at::Tensor* labels = nullptr) {
  FashionMnistOptions options;
  options.directory = data_dir;
  const LabeledImages data = load_fashion_mnist(split, options);
  if (labels != nullptr) *labels = data.labels;
  return prepare_fashion_mnist_images(data, image_size, channels);
}

// --sampling: a patch over the generator's sampling defaults and schedule options
// (sampling_patch.h).
// Sets the schedule's options on `generator` and returns the options to sample with (none for an
// empty patch: the defaults).
std::optional<GenerationOptions> apply_sampling_patch(Generator& generator,
                                                      const std::string& patch) {
  if (patch.empty()) return std::nullopt;
  const SamplingSettings settings = patched_sampling_settings(generator.config(), patch);
  generator.set_schedule_config(settings.schedule);
  return settings.options;
}

// The sampling options and the schedule section they run with, as one JSON line.
std::string sampling_summary(const GenerationOptions& options,
                             const ScheduleConfig& schedule_config) {
  nlohmann::json summary = config_to_json(options);
  const nlohmann::json schedule = config_to_json(schedule_config);
  summary["schedule"] = schedule[schedule["kind"].get<std::string>()];
  return summary.dump();
}

// Samples per sampling call in the demo (the samples do not depend on it). One grid's worth (100)
// suits the schedules whose calls run every position of every sample; raster decoding with a KV
// cache runs one position per sample per call, where 100 samples leave the calls too small to
// amortise each step's fixed costs (`tessera eval --batch-size`: 12.5 ms per image at 100, 9.5 at
// 500, while MaskGIT went from 19.1 to 28.4: its activations outgrow the cache; docs/models.md).
int64_t demo_batch_size(const Generator& generator, int64_t grid_size) {
  const ScheduleConfig& schedule = generator.config().schedule;
  const bool token_by_token = schedule.kind == ScheduleKind::raster && schedule.raster.kv_cache;
  return token_by_token ? 5 * grid_size : grid_size;
}

}  // namespace

void run_train(const TrainOptions& options) {
  auto config = load_config<GeneratorTrainConfig>(options.config_path);
  if (!options.out.empty()) config.trainer.output_dir = options.out;
  if (!options.data.empty()) config.data.directory = options.data;
  if (options.steps >= 0) config.trainer.steps = options.steps;
  if (options.threads >= 0) config.trainer.threads = options.threads;
  if (options.fresh) config.trainer.resume = false;
  const GeneratorTrainResult result = train_generator(config);
  std::printf("generator: %lld parameters, %s schedule\n",
              static_cast<long long>(result.parameters),
              config_to_json(config.generator.schedule)["kind"].get<std::string>().c_str());
  std::printf("trained steps %lld..%lld in %.1f s (tokens encoded in %.1f s), final loss %.5f\n",
              static_cast<long long>(result.train.start_step),
              static_cast<long long>(result.train.steps), result.train.seconds,
              result.encode_seconds, result.train.final_loss);
  std::printf("checkpoint: %s\n", result.train.checkpoint.c_str());
  if (!result.generator_file.empty()) {
    std::printf("generator: %s\n", result.generator_file.c_str());
  }
}

namespace {

// Generators with more classes than this need --classes: a row per class would be a huge grid.
constexpr int64_t kMostDefaultClassRows = 16;

void check_class_rows(const SampleOptions& options, const std::string& what, int64_t num_classes) {
  TESSERA_CHECK(!options.classes.empty() || num_classes <= kMostDefaultClassRows,
                "tessera sample: {} has {} classes; choose the grid's rows with --classes (e.g. "
                "--classes 207,360,387,974)",
                what, num_classes);
}

// --preset's architecture, or --weights' own when its metadata describes a VAR model (then with
// the sampling settings recorded there).
GeneratorPreset preset_to_sample(const SampleOptions& options) {
  if (!options.preset.empty()) return generator_preset(options.preset);
  const SafetensorsFile file = SafetensorsFile::open(options.weights);
  VarArchitecture architecture;
  try {
    architecture = var_architecture_from_metadata(file.metadata());
  } catch (const Error& e) {
    TESSERA_FAIL("tessera sample: --weights {} without --preset needs VAR's architecture in its "
                 "__metadata__ ({}); name a preset with --preset, or add the metadata with "
                 "tools/convert_checkpoint.py --metadata",
                 options.weights, e.what());
  }
  // HMAR's checkpoints carry its mask token; its tails are 8 blocks (build_vae_hmar).
  const bool hmar = file.contains("mask_embed.weight");
  GeneratorPreset preset =
      hmar ? hmar_generator_preset(architecture) : var_generator_preset(architecture);
  preset.name = options.weights;
  preset.generator.sampling = var_sampling_from_metadata(file.metadata(), preset.generator.sampling);
  return preset;
}

// The preset's generator with --weights and --vae when given, random weights otherwise.
Generator preset_generator_to_sample(const SampleOptions& options) {
  const GeneratorPreset preset = preset_to_sample(options);
  // Checked before building: a published model takes seconds to allocate.
  check_class_rows(options, preset.name, preset.generator.backbone.num_classes);
  if (options.weights.empty()) {
    std::printf("%s: random transformer weights, for speed and memory measurements only\n",
                preset.name.c_str());
  }
  if (options.vae.empty()) {
    std::printf("%s: random VQ-VAE weights (no --vae)\n", preset.name.c_str());
  }
  return build_preset_generator(preset, {.transformer = options.weights, .tokenizer = options.vae});
}

// --model's generator, or --config's with its initialisation (init_seed) and no training, or a
// preset's.
Generator generator_to_sample(const SampleOptions& options) {
  const int sources = static_cast<int>(!options.model.empty()) +
                      static_cast<int>(!options.config.empty()) +
                      static_cast<int>(!options.preset.empty() || !options.weights.empty());
  TESSERA_CHECK(sources == 1,
                "tessera sample: give exactly one of --model (a generator file), --config (a "
                "training config, sampled with untrained weights) and --preset/--weights (a "
                "published architecture)");
  if (!options.preset.empty() || !options.weights.empty()) return preset_generator_to_sample(options);
  TESSERA_CHECK(options.vae.empty(), "tessera sample: --vae goes with --preset or --weights");
  if (!options.model.empty()) return Generator::load(options.model);
  const auto config = load_config<GeneratorTrainConfig>(options.config);
  config.validate();
  std::printf("%s: untrained weights (init_seed %llu), for speed and memory measurements only\n",
              options.config.c_str(), static_cast<unsigned long long>(config.init_seed));
  return Generator(config.generator, load_tokenizer_checkpoint(config.tokenizer),
                   config.init_seed);
}

}  // namespace

void run_sample(const SampleOptions& options) {
  set_threads(options.threads);
  Generator generator = generator_to_sample(options);
  const std::optional<GenerationOptions> sampling =
      apply_sampling_patch(generator, options.sampling);
  check_class_rows(options, "the generator", generator.num_classes());
  const BulkSamples samples = sample_class_rows(generator, {.per_class = options.per_class,
                                                            .classes = options.classes,
                                                            .seed = options.seed,
                                                            .reference_seeding =
                                                                options.reference_seeding,
                                                            .options = sampling});
  // Small images (Fashion-MNIST's 32 pixels) are shown twice as large.
  const int64_t upscale = generator.config().image_size < 128 ? 2 : 1;
  write_image_grid(options.out, samples.images,
                   {.columns = options.per_class, .padding = 2, .pad_value = 96, .upscale = upscale});
  std::printf("wrote %s: %lld samples (%lld per class, one row per class), %.1f ms per image\n",
              options.out.c_str(), static_cast<long long>(samples.images.size(0)),
              static_cast<long long>(options.per_class), samples.milliseconds_per_image());
  if (!options.save_tokens.empty()) {
    std::map<std::string, at::Tensor> tensors{{"labels", samples.labels}};
    for (size_t s = 0; s < samples.tokens.scales.size(); ++s) {
      tensors.emplace("scale_" + std::to_string(s), samples.tokens.scales[s]);
    }
    const std::string source = !options.model.empty()    ? options.model
                               : !options.config.empty() ? options.config
                               : !options.preset.empty() ? options.preset
                                                         : options.weights;
    save_safetensors(options.save_tokens, tensors, {{"tessera.model", source}});
    std::printf("wrote %s (labels, scale_0..scale_%zu)\n", options.save_tokens.c_str(),
                samples.tokens.scales.size() - 1);
  }
}

namespace {

// `tessera eval --tokenizer`: the floors of a tokenizer alone (FID-FM of its reconstructions of
// the test images against the training images, beside the real test images' FID-FM).
void run_eval_tokenizer(const EvalOptions& options, Classifier& classifier) {
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

}  // namespace

void run_eval(const EvalOptions& options) {
  set_threads(options.threads);
  TESSERA_CHECK(options.model.empty() != options.tokenizer.empty(),
                "tessera eval: give exactly one of --model (a generator) and --tokenizer");
  if (!options.tokenizer.empty()) {
    Classifier classifier = load_classifier(
        options.classifier.empty() ? default_classifier_path()
                                   : std::filesystem::path(options.classifier));
    run_eval_tokenizer(options, classifier);
    return;
  }
  Generator generator = Generator::load(options.model);
  Classifier classifier = load_classifier(
      options.classifier.empty() ? default_classifier_path()
                                  : std::filesystem::path(options.classifier));
  const int64_t size = generator.config().image_size;
  const int64_t channels = generator.config().image_channels;
  at::Tensor test_labels;
  const at::Tensor train = prepared_split(DatasetSplit::train, options.data, size, channels);
  const at::Tensor test =
      prepared_split(DatasetSplit::test, options.data, size, channels, &test_labels);
  const QualityFloors floors =
      quality_floors(classifier, train, test, test_labels, &generator.tokenizer());
  const GaussianStats reference = feature_statistics(classifier, train);
  const std::optional<GenerationOptions> sampling =
      apply_sampling_patch(generator, options.sampling);
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
    results["result"] = generator_results(std::filesystem::path(options.model).stem().string(),
                                          generator, samples, quality, options.seed);
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

namespace {

// convert --sampling: store new sampling defaults in the written generator.
void print_new_sampling(const ConvertOptions& options) {
  if (options.sampling.empty()) return;
  const SamplingSettings settings = set_generator_sampling(options.out, options.sampling);
  std::printf("sampling defaults of %s: %s\n", options.out.c_str(),
              sampling_summary(settings.options, settings.schedule).c_str());
}

}  // namespace

void run_convert(const ConvertOptions& options) {
  TESSERA_CHECK(options.in.empty() != options.checkpoint.empty(),
                "tessera convert: give exactly one of --in (a file to cast) and --checkpoint (a "
                "training checkpoint)");
  if (!options.in.empty()) {
    if (!options.sampling.empty()) {
      // A patch that does not fit the generator is refused before anything is written.
      Generator generator = Generator::load(options.in);
      apply_sampling_patch(generator, options.sampling);
    }
    if (options.dtype.empty()) {
      // Only new sampling defaults: the tensors keep their stored dtypes.
      TESSERA_CHECK(!options.sampling.empty(),
                    "tessera convert --in: nothing to do; give --dtype, --sampling or both");
      if (!std::filesystem::exists(options.out) ||
          !std::filesystem::equivalent(options.in, options.out)) {
        std::filesystem::copy_file(options.in, options.out,
                                   std::filesystem::copy_options::overwrite_existing);
      }
      print_new_sampling(options);
      return;
    }
    const CastReport report =
        cast_weights_file(options.in, options.out, parse_stored_dtype(options.dtype));
    std::printf("wrote %s: %lld tensors, %lld cast to %s, tensor data %.2f MB -> %.2f MB\n",
                options.out.c_str(), static_cast<long long>(report.tensors),
                static_cast<long long>(report.cast), options.dtype.c_str(),
                report.bytes_before / 1e6, report.bytes_after / 1e6);
    print_new_sampling(options);
    return;
  }
  TESSERA_CHECK(!options.tokenizer.empty(),
                "tessera convert --checkpoint: --tokenizer is required (a training checkpoint does "
                "not carry the frozen tokenizer; give the config's tokenizer file)");
  Generator generator = generator_from_checkpoint(
      options.checkpoint, load_tokenizer_checkpoint(options.tokenizer),
      options.weights == "trained" ? CheckpointWeights::trained : CheckpointWeights::ema);
  apply_sampling_patch(generator, options.sampling);  // refused before anything is written
  const int64_t step = checkpoint_step(options.checkpoint);
  generator.save(options.out, {{"tessera.step", std::to_string(step)},
                               {"tessera.weights", options.weights}});
  const std::string dtype = options.dtype.empty() ? "fp32" : options.dtype;
  if (parse_stored_dtype(dtype) != at::kFloat) {
    cast_weights_file(options.out, options.out, parse_stored_dtype(dtype));
  }
  std::printf("wrote %s: the %s weights of step %lld, %s\n", options.out.c_str(),
              options.weights.c_str(), static_cast<long long>(step), dtype.c_str());
  print_new_sampling(options);
}

int64_t run_demo_models(const DemoModelsOptions& options) {
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
    const std::filesystem::path grid_path = options.out_dir / (name + ".png");
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
  nlohmann::ordered_json file = results_header(options.command_line);
  file["samples"] = options.samples;
  file["seed"] = options.seed;
  file["wall_seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - options.command_start)
          .count();
  file["models"] = results;
  const std::filesystem::path json =
      options.json.empty() ? options.out_dir / "demo.json" : options.json;
  write_results_file(json, file);
  std::printf("\nwrote %s\n", json.c_str());
  return static_cast<int64_t>(rows.size());
}

void run_info_preset(const std::string& name) {
  const GeneratorPreset preset = generator_preset(name);
  const GeneratorConfig& g = preset.generator;
  const int64_t backbone = g.backbone.parameter_count();
  const int64_t total = transformer_parameter_count(g);
  std::printf("%s: %s\n", preset.name.c_str(), preset.description.c_str());
  std::printf("  backbone: %lld blocks%s, width %lld, %lld heads, %lld positions (patch_nums %s)\n",
              static_cast<long long>(g.backbone.depth),
              g.backbone.branch_blocks > 0
                  ? fmt::format(" + {} branch blocks", g.backbone.branch_blocks).c_str()
                  : "",
              static_cast<long long>(g.backbone.width),
              static_cast<long long>(g.backbone.num_heads),
              static_cast<long long>(g.backbone.max_length()),
              fmt::format("{}", fmt::join(g.backbone.segments, "+")).c_str());
  std::printf("  parameters: %lld backbone + %lld head%s = %lld (%.1f M; %s %.1f M)\n",
              static_cast<long long>(backbone), static_cast<long long>(total - backbone),
              g.refinement_head ? "s" : "", static_cast<long long>(total),
              static_cast<double>(total) / 1e6, preset.parameters_source.c_str(),
              static_cast<double>(preset.published_parameters) / 1e6);
  if (preset.tokenizer.multiscale_vq_vae) {
    const MultiScaleVqVaeConfig& vq = *preset.tokenizer.multiscale_vq_vae;
    std::printf("  tokenizer: multi-scale VQ-VAE, ch %lld, Cvae %lld, codebook %lld, %lld shared "
                "Phi, images %lldx%lld\n",
                static_cast<long long>(vq.autoencoder.base_channels),
                static_cast<long long>(vq.autoencoder.latent_channels),
                static_cast<long long>(vq.quantizer.codebook_size),
                static_cast<long long>(vq.quantizer.phi_count),
                static_cast<long long>(g.image_size), static_cast<long long>(g.image_size));
  }
}

}  // namespace tessera::cli
