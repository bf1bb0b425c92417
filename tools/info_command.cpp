// `tessera info`: the build configuration, or a preset's architecture and parameter counts.
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "tessera/compat/presets.h"
#include "tessera/version.h"

namespace tessera::cli {

namespace {

// One transformer stack's line: "  <label>: N blocks, width W, H heads, L positions (segments …)".
void print_stack(const char* label, const BackboneConfig& stack) {
  std::printf("  %s: %lld blocks%s, width %lld, %lld heads, %lld positions (segments %s)\n", label,
              static_cast<long long>(stack.depth),
              stack.branch_blocks > 0
                  ? fmt::format(" + {} branch blocks", stack.branch_blocks).c_str()
                  : "",
              static_cast<long long>(stack.width), static_cast<long long>(stack.num_heads),
              static_cast<long long>(stack.max_length()),
              fmt::format("{}", fmt::join(stack.segments, "+")).c_str());
}

// `tessera info --preset NAME`: the preset's architecture and parameter counts (from the configs,
// nothing is allocated), against the published size.
void run_info_preset(const std::string& name) {
  const GeneratorPreset preset = generator_preset(name);
  const GeneratorConfig& g = preset.generator;
  const int64_t backbone = g.backbone.parameter_count();
  const int64_t total = transformer_parameter_count(g);
  std::printf("%s: %s\n", preset.name.c_str(), preset.description.c_str());
  print_stack("backbone", g.backbone);
  const int64_t decoder = g.decoder ? g.decoder->parameter_count() : 0;
  if (g.decoder) print_stack("decoder", *g.decoder);
  std::printf("  parameters: %lld backbone + %s%lld head%s = %lld (%.1f M; %s %.1f M)\n",
              static_cast<long long>(backbone),
              g.decoder ? fmt::format("{} decoder + ", decoder).c_str() : "",
              static_cast<long long>(total - backbone - decoder), g.refinement_head ? "s" : "",
              static_cast<long long>(total), static_cast<double>(total) / 1e6,
              preset.parameters_source.c_str(),
              static_cast<double>(preset.published_parameters) / 1e6);
  if (preset.tokenizer.kl_vae) {
    const KlVaeConfig& kl = *preset.tokenizer.kl_vae;
    std::printf("  tokenizer: KL-VAE, ch %lld, channel multipliers %s, z %lld, %lld token "
                "channels, scale %g, images %lldx%lld\n",
                static_cast<long long>(kl.autoencoder.base_channels),
                fmt::format("{}", fmt::join(kl.autoencoder.channel_multipliers, ",")).c_str(),
                static_cast<long long>(kl.autoencoder.latent_channels),
                static_cast<long long>(kl.token_channels), kl.latent_scale,
                static_cast<long long>(g.image_size), static_cast<long long>(g.image_size));
  }
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
  if (preset.tokenizer.vq_vae) {
    const VqVaeConfig& vq = *preset.tokenizer.vq_vae;
    std::printf(
        "  tokenizer: VQ-VAE, ch %lld, channel multipliers %s, z %lld, codebook %lld x "
        "%lld%s, images %lldx%lld\n",
        static_cast<long long>(vq.autoencoder.base_channels),
        fmt::format("{}", fmt::join(vq.autoencoder.channel_multipliers, ",")).c_str(),
        static_cast<long long>(vq.autoencoder.latent_channels),
        static_cast<long long>(vq.quantizer.codebook_size),
        static_cast<long long>(vq.quantizer.code_dim),
        vq.quantizer.l2_normalized_codes ? " (l2-normalised)" : "",
        static_cast<long long>(g.image_size), static_cast<long long>(g.image_size));
  }
}

}  // namespace

void setup_info(CLI::App& app, const CommandContext& context) {
  auto* info = app.add_subcommand(
      "info", "print the build configuration, or a preset's architecture and parameter counts");
  auto preset = std::make_shared<std::string>();
  info->add_option(
      "--preset", *preset,
      "a preset name (var-d16 … var-d30, hmar-d16 … hmar-d30, llamagen-b … "
      "llamagen-3b, llamagen-b-384 … llamagen-3b-384, mar-b, mar-l, mar-h): its architecture and "
      "parameter counts, computed from the config");
  info->callback([preset, heap = context.heap] {
    if (!preset->empty()) {
      run_info_preset(*preset);
      return;
    }
    std::printf("tessera %s\n%s", TESSERA_VERSION_STRING, at::get_parallel_info().c_str());
    std::printf("heap reuse (Note [Heap reuse]): %s%s\n", heap.applied ? "on" : "off: ",
                heap.reason);
  });
}

}  // namespace tessera::cli
