// `tessera convert`: casts a weights file to another dtype, or extracts the generator of a
// training checkpoint; either may store new sampling defaults in the written generator.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "command.h"
#include "command_util.h"
#include "tessera/compat/weights_conversion.h"
#include "tessera/core/error.h"
#include "tessera/pipeline/sampling_request.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera::cli {

namespace {

struct ConvertOptions {
  std::string in;          // a safetensors file to cast, or
  std::string checkpoint;  // a `tessera train` checkpoint to extract the generator from
  std::string tokenizer;   // with checkpoint: the run's tokenizer
  std::string weights = "ema";
  std::string dtype;      // "" keeps the stored dtypes (--in) or fp32 (--checkpoint)
  std::string sampling;  // JSON merge patch stored as the written generator's sampling defaults
  std::string out;
};

// convert --sampling: store new sampling defaults in the written generator.
void print_new_sampling(const ConvertOptions& options) {
  if (options.sampling.empty()) return;
  const GenerationOptions defaults = set_generator_sampling(options.out, options.sampling);
  const Generator written = Generator::load(options.out);
  std::printf("sampling defaults of %s: %s\n", options.out.c_str(),
              sampling_summary(defaults, written.config().schedule).c_str());
}

void run_convert(const ConvertOptions& options) {
  TESSERA_CHECK(options.in.empty() != options.checkpoint.empty(),
                "tessera convert: give exactly one of --in (a file to cast) and --checkpoint (a "
                "training checkpoint)");
  if (!options.in.empty()) {
    if (!options.sampling.empty()) {
      // A patch that does not fit the generator is refused before anything is written.
      sampling_from_patch(Generator::load(options.in), options.sampling);
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
  sampling_from_patch(generator, options.sampling);  // refused before anything is written
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

}  // namespace

void setup_convert(CLI::App& app, const CommandContext& /*context*/) {
  auto* convert = app.add_subcommand(
      "convert", "cast a weights file to another dtype, or extract the generator of a training checkpoint");
  auto options = std::make_shared<ConvertOptions>();
  auto* in =
      convert->add_option("--in", options->in,
                          "a Tessera safetensors file (generator, tokenizer, classifier) to cast to --dtype")
          ->check(CLI::ExistingFile);
  auto* checkpoint =
      convert->add_option("--checkpoint", options->checkpoint,
                          "instead of --in: a `tessera train` checkpoint.safetensors; writes its generator")
          ->check(CLI::ExistingFile);
  in->excludes(checkpoint);
  convert->add_option("--tokenizer", options->tokenizer,
                      "with --checkpoint: the tokenizer the run was trained on (checkpoints do not carry it)")
      ->check(CLI::ExistingFile);
  convert->add_option("--weights", options->weights, "with --checkpoint: ema or trained")
      ->check(CLI::IsMember({"ema", "trained"}))
      ->capture_default_str();
  convert->add_option("--dtype", options->dtype,
                      "bf16, fp16 or fp32 for the written tensors (default: --in keeps its dtypes, "
                      "--checkpoint writes fp32)");
  convert->add_option("--sampling", options->sampling,
                      "JSON merge patch stored as the written generator's new sampling defaults (as --sampling of sample and eval: guidance, head, schedule)");
  convert->add_option("--out", options->out, "file to write")->required();
  convert->callback([options] { run_convert(*options); });
}

}  // namespace tessera::cli
