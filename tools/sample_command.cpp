// `tessera sample`: a class-conditional grid from a generator file, a training config's untrained
// generator, or a published architecture (a preset, with or without its reference weights).
#include <ATen/ATen.h>

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.h"
#include "command_util.h"
#include "tessera/compat/presets.h"
#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/eval/generator_evaluation.h"
#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/train/generator_training.h"

namespace tessera::cli {

namespace {

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

// Generators with more classes than this need --classes: a row per class would be a huge grid.
constexpr int64_t kMostDefaultClassRows = 16;

void check_class_rows(const SampleOptions& options, const std::string& what, int64_t num_classes) {
  TESSERA_CHECK(!options.classes.empty() || num_classes <= kMostDefaultClassRows,
                "tessera sample: {} has {} classes; choose the grid's rows with --classes (e.g. "
                "--classes 207,360,387,974)",
                what, num_classes);
}

// --preset's architecture, or the one --weights describes itself.
GeneratorPreset preset_to_sample(const SampleOptions& options) {
  if (!options.preset.empty()) return generator_preset(options.preset);
  try {
    return preset_from_reference_weights(options.weights);
  } catch (const Error& e) {
    TESSERA_FAIL("tessera sample: --weights without --preset: {}", e.what());
  }
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

void run_sample(const SampleOptions& options) {
  set_threads(options.threads);
  Generator generator = generator_to_sample(options);
  const std::optional<GenerationOptions> sampling =
      sampling_from_patch(generator, options.sampling);
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

}  // namespace

void setup_sample(CLI::App& app, const CommandContext& /*context*/) {
  auto* sample = app.add_subcommand("sample", "sample a class-conditional grid from a generator");
  auto options = std::make_shared<SampleOptions>();
  auto* model = sample->add_option("--model", options->model,
                                   "generator file (tessera train's generator.safetensors)")
                    ->check(CLI::ExistingFile);
  auto* config =
      sample->add_option("--config", options->config,
                         "instead of --model: a `tessera train` config; samples its generator with "
                         "freshly initialised weights (for speed and memory measurements)")
          ->check(CLI::ExistingFile);
  model->excludes(config);
  auto* preset = sample->add_option(
      "--preset", options->preset,
      "instead of --model: a preset (var-d16 … var-d30, hmar-d16 … hmar-d30) with --weights and --vae, "
      "or random weights without them (for speed and memory measurements)");
  preset->excludes(model)->excludes(config);
  auto* weights =
      sample->add_option("--weights", options->weights,
                         "the transformer's reference checkpoint (VAR's or HMAR's key names, converted by "
                         "tools/convert_checkpoint.py); without --preset its __metadata__ must "
                         "describe the architecture (docs/compat.md)")
          ->check(CLI::ExistingFile);
  weights->excludes(model)->excludes(config);
  sample->add_option("--vae", options->vae,
                     "with --preset or --weights: VAR's VQ-VAE checkpoint (vae_ch160v4096z32, "
                     "converted); random weights without it")
      ->check(CLI::ExistingFile)
      ->excludes(model)
      ->excludes(config);
  sample->add_option("--classes", options->classes,
                     "comma-separated class ids, one grid row each (default: every class; "
                     "required for generators with more than 16 classes)")
      ->delimiter(',');
  sample->add_flag("--reference-seeding", options->reference_seeding,
                   "draw as VAR's sampler does: one generator seeded with --seed for the whole "
                   "grid, torch 1.13's multinomial (docs/compat.md); default: one stream per "
                   "sample");
  sample->add_option("--out", options->out, "PNG grid to write")->capture_default_str();
  sample->add_option("--per-class", options->per_class, "samples per class (grid columns)")
      ->capture_default_str();
  sample->add_option("--seed", options->seed, "sampling seed")->capture_default_str();
  sample->add_option("--save-tokens", options->save_tokens,
                     "also write the sampled tokens and labels to this safetensors file");
  sample->add_option("--sampling", options->sampling, kSamplingPatchHelp);
  sample->add_option("--threads", options->threads, "intra-op threads, 0 = LibTorch's default");
  sample->callback([options] { run_sample(*options); });
}

}  // namespace tessera::cli
