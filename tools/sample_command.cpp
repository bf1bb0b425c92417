// `tessera sample`: a class-conditional grid from a generator file, a training config's untrained
// generator, or a published architecture (a preset, with or without its reference weights).
#include <ATen/ATen.h>

#include <algorithm>
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
#include "tessera/nn/inference_precision.h"
#include "tessera/pipeline/sampling_measurement.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/train/generator_training.h"

namespace tessera::cli {

namespace {

struct SampleOptions {
  std::string model;   // a generator file, or
  std::string config;  // a `tessera train` config: its generator with freshly initialised weights
  std::string preset;   // a preset (generator_preset), with or without weights
  std::string weights;  // reference transformer weights (the preset family's key names)
  std::string vae;      // reference tokenizer weights (the preset family's key names)
  std::string out = "out/samples.png";
  int64_t per_class = 10;  // grid: per_class samples of each class
  std::vector<int64_t> classes;  // grid rows; empty: every class
  uint64_t seed = 0;
  bool reference_seeding = false;  // SampleRequest::reference_seeding
  std::string reference_multinomial = "inverse_cdf";  // SampleRequest::reference_multinomial
  std::string save_tokens;  // safetensors file for the token ids / vectors ("" = none)
  std::string sampling;     // JSON merge patch over the generator's sampling defaults ("" = none)
  int64_t threads = 0;
  int64_t warmup = 0;  // untimed calls before the measured ones
  int64_t repeat = 1;  // measured calls
  bool profile = false;  // print each phase's time and the peak memory
  std::string precision = "fp32";  // fp32, bf16, int8 or auto (tessera/nn/inference_precision.h)
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
    std::printf("%s: random tokenizer weights (no --vae)\n", preset.name.c_str());
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

void print_measurement(const SamplingMeasurement& m, bool profile) {
  const auto [low, high] = std::minmax_element(m.seconds.begin(), m.seconds.end());
  std::printf("%lld timed calls of %lld images: median %.3f s (min %.3f, max %.3f), %.3f images/s\n",
              static_cast<long long>(m.seconds.size()), static_cast<long long>(m.batch),
              m.median_seconds(), *low, *high, m.images_per_second());
  if (!profile) return;
  const PhaseTimes& t = m.median_phases();
  std::printf("phases of the median call (%.3f s):\n", t.total);
  for (const Phase phase : {Phase::backbone, Phase::head, Phase::decode}) {
    std::printf("  %-9s %8.3f s  %5.1f %%\n", std::string(to_string(phase)).c_str(),
                t.seconds(phase), 100.0 * t.seconds(phase) / t.total);
  }
  std::printf("  %-9s %8.3f s  %5.1f %%\n", "rest", t.rest(), 100.0 * t.rest() / t.total);
  std::printf("peak resident memory over the timed calls: %.2f GB%s\n",
              static_cast<double>(m.peak_resident_bytes) / 1e9,
              m.peak_covers_only_the_calls ? "" : " (the process's peak: it could not be reset)");
}

// --warmup/--repeat/--profile: the grid comes from the last timed call.
void run_measured_sample(const SampleOptions& options, Generator& generator,
                         const std::optional<GenerationOptions>& sampling) {
  TESSERA_CHECK(options.save_tokens.empty(),
                "tessera sample: --save-tokens cannot be combined with --warmup, --repeat or "
                "--profile; save the tokens in a run without them (the same seed gives the same "
                "tokens)");
  TESSERA_CHECK(!options.reference_seeding || options.warmup + options.repeat == 1,
                "tessera sample: --reference-seeding draws one stream per call; time it with "
                "--repeat 1 and no --warmup");
  const at::Tensor labels = class_row_labels(
      generator, {.per_class = options.per_class, .classes = options.classes});
  const SamplingMeasurement m = measure_sampling(
      generator, labels,
      {.seed = options.seed,
       .reference_seeding = options.reference_seeding,
       .reference_multinomial = reference_multinomial_from_name(options.reference_multinomial),
       .options = sampling},
      {.warmup = options.warmup, .repeat = options.repeat});
  const int64_t upscale = generator.config().image_size < 128 ? 2 : 1;
  write_image_grid(options.out, m.images,
                   {.columns = options.per_class, .padding = 2, .pad_value = 96, .upscale = upscale});
  std::printf("wrote %s: %lld samples (%lld per class, one row per class)\n", options.out.c_str(),
              static_cast<long long>(m.images.size(0)), static_cast<long long>(options.per_class));
  print_measurement(m, options.profile);
}

void run_sample(const SampleOptions& options) {
  set_threads(options.threads);
  TESSERA_CHECK(options.warmup >= 0 && options.repeat >= 1,
                "tessera sample: --warmup must be >= 0 and --repeat >= 1, got {} and {}",
                options.warmup, options.repeat);
  // Checked before loading: a published model takes seconds to build.
  const InferencePrecision precision = parse_inference_precision(options.precision, at::kCPU);
  Generator generator = generator_to_sample(options);
  if (precision != InferencePrecision::fp32) {
    generator.set_precision(precision);
    const char* hardware = "";
    if (precision == InferencePrecision::bf16) {
      hardware = cpu_has_bf16_hardware() ? " (the CPU multiplies bf16 in hardware)"
                                         : " (no bf16 hardware on this CPU: emulated, slower)";
    }
    std::printf("precision: %s%s\n", std::string(to_string(precision)).c_str(), hardware);
  }
  const std::optional<GenerationOptions> sampling =
      sampling_from_patch(generator, options.sampling);
  check_class_rows(options, "the generator", generator.num_classes());
  if (options.warmup > 0 || options.repeat > 1 || options.profile) {
    run_measured_sample(options, generator, sampling);
    return;
  }
  const BulkSamples samples = sample_class_rows(
      generator,
      {.per_class = options.per_class,
       .classes = options.classes,
       .seed = options.seed,
       .reference_seeding = options.reference_seeding,
       .reference_multinomial = reference_multinomial_from_name(options.reference_multinomial),
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
      "instead of --model: a preset (var-d16 … var-d30, hmar-d16 … hmar-d30, llamagen-b … "
      "llamagen-3b, llamagen-b-384 … llamagen-3b-384, mar-b, mar-l, mar-h) with --weights "
      "and --vae, or random weights without them (for speed and memory measurements)");
  preset->excludes(model)->excludes(config);
  auto* weights =
      sample
          ->add_option(
              "--weights", options->weights,
              "the transformer's reference checkpoint (VAR's, HMAR's, LlamaGen's or MAR's key "
              "names, converted by "
              "tools/convert_checkpoint.py); without --preset its __metadata__ (MAR's: its "
              "tensors) must describe the architecture (docs/compat.md)")
          ->check(CLI::ExistingFile);
  weights->excludes(model)->excludes(config);
  sample
      ->add_option("--vae", options->vae,
                   "with --preset or --weights: the reference's tokenizer checkpoint (VAR's "
                   "vae_ch160v4096z32, LlamaGen's vq_ds16_c2i or MAR's kl16, converted); random "
                   "weights "
                   "without it")
      ->check(CLI::ExistingFile)
      ->excludes(model)
      ->excludes(config);
  sample->add_option("--classes", options->classes,
                     "comma-separated class ids, one grid row each (default: every class; "
                     "required for generators with more than 16 classes)")
      ->delimiter(',');
  sample->add_flag("--reference-seeding", options->reference_seeding,
                   "draw as the reference samplers do: one generator seeded with --seed for "
                   "the whole grid, torch.multinomial as --reference-multinomial says, MAR's "
                   "orders from numpy's RandomState seeded alike (docs/compat.md); default: one "
                   "stream per sample");
  sample
      ->add_option("--reference-multinomial", options->reference_multinomial,
                   "with --reference-seeding: inverse_cdf (PyTorch <= 1.13, VAR's fixture) or "
                   "exponential_race (PyTorch >= 2.0, LlamaGen's fixture and today's references)")
      ->check(CLI::IsMember({"inverse_cdf", "exponential_race", "inverse-cdf", "exponential-race"}))
      ->capture_default_str();
  sample->add_option("--out", options->out, "PNG grid to write")->capture_default_str();
  sample->add_option("--per-class", options->per_class, "samples per class (grid columns)")
      ->capture_default_str();
  sample->add_option("--seed", options->seed, "sampling seed")->capture_default_str();
  sample->add_option("--save-tokens", options->save_tokens,
                     "also write the sampled tokens and labels to this safetensors file");
  sample->add_option("--sampling", options->sampling, kSamplingPatchHelp);
  sample->add_option("--threads", options->threads, "intra-op threads, 0 = LibTorch's default");
  sample->add_option("--warmup", options->warmup,
                     "untimed sampling calls before the timed ones (for speed measurements)")
      ->capture_default_str();
  sample->add_option("--repeat", options->repeat,
                     "timed sampling calls of the whole grid; prints their median, min and max "
                     "(the grid written is the last call's)")
      ->capture_default_str();
  sample->add_option("--precision", options->precision,
                     "fp32 (exact), bf16 (bfloat16 matrix products, float32 accumulation), int8 "
                     "(int8 linear layers: weights per channel, inputs per row) or auto (bf16 "
                     "where the CPU has AVX512-BF16 or AMX, fp32 otherwise)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "auto"}))
      ->capture_default_str();
  sample->add_flag("--profile", options->profile,
                   "print the median call's time per phase (backbone, head and sampling, "
                   "tokenizer decode, rest) and the peak resident memory of the timed calls");
  sample->callback([options] { run_sample(*options); });
}

}  // namespace tessera::cli
