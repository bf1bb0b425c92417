#include "tessera/pipeline/presets.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/head/head.h"

namespace tessera {

namespace {

struct VarSize {
  int64_t depth;
  int64_t published_parameters;
};
// The sizes VAR publishes for its checkpoints: 310 M, 600 M, 1.0 B, 2.0 B.
constexpr VarSize kVarSizes[] = {
    {16, 310'000'000}, {20, 600'000'000}, {24, 1'000'000'000}, {30, 2'000'000'000}};

// `text` as a whole integer; `key` names it in the error.
int64_t parse_integer(const std::string& text, const std::string& key) {
  try {
    size_t used = 0;
    const int64_t v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::logic_error&) {
  }
  TESSERA_FAIL("VAR metadata: '{}' is not an integer: '{}'", key, text);
}

int64_t parse_int(const std::map<std::string, std::string>& m, const std::string& key) {
  const auto it = m.find(key);
  TESSERA_CHECK(it != m.end(), "VAR metadata: '{}' is missing", key);
  return parse_integer(it->second, key);
}

bool parse_bool(const std::map<std::string, std::string>& m, const std::string& key,
                bool fallback) {
  const auto it = m.find(key);
  if (it == m.end()) return fallback;
  if (it->second == "True" || it->second == "true" || it->second == "1") return true;
  if (it->second == "False" || it->second == "false" || it->second == "0") return false;
  TESSERA_FAIL("VAR metadata: '{}' must be True or False, got '{}'", key, it->second);
}

}  // namespace

VarArchitecture var_architecture_from_metadata(const std::map<std::string, std::string>& metadata) {
  VarArchitecture a;
  a.depth = parse_int(metadata, "depth");
  a.width = parse_int(metadata, "width");
  a.heads = parse_int(metadata, "heads");
  a.vocab_size = parse_int(metadata, "vocab_size");
  a.vae_channels = parse_int(metadata, "Cvae");
  a.vae_base_channels = parse_int(metadata, "ch");
  a.num_classes = parse_int(metadata, "num_classes");
  a.share_quant_resi = parse_int(metadata, "share_quant_resi");
  a.shared_adaln = parse_bool(metadata, "shared_aln", false);
  a.attn_l2_norm = parse_bool(metadata, "attn_l2_norm", true);
  if (const auto it = metadata.find("norm_eps"); it != metadata.end()) {
    try {
      a.norm_eps = std::stod(it->second);
    } catch (const std::logic_error&) {
      TESSERA_FAIL("VAR metadata: 'norm_eps' is not a number: '{}'", it->second);
    }
  }
  const auto it = metadata.find("patch_nums");
  TESSERA_CHECK(it != metadata.end(), "VAR metadata: 'patch_nums' is missing");
  a.patch_nums.clear();
  std::string item;
  for (const char ch : it->second + ",") {
    if (ch != ',') {
      item += ch;
      continue;
    }
    a.patch_nums.push_back(parse_integer(item, "patch_nums"));
    item.clear();
  }
  a.image_size = a.patch_nums.back() * 16;
  return a;
}

// Note [VAR presets].
GeneratorPreset var_generator_preset(const VarArchitecture& a) {
  GeneratorPreset p;
  MultiScaleVqVaeConfig vq;  // the defaults are VAR's VQVAE but for the sizes set here
  vq.autoencoder.image_channels = 3;
  vq.autoencoder.base_channels = a.vae_base_channels;
  vq.autoencoder.latent_channels = a.vae_channels;
  vq.quantizer.codebook_size = a.vocab_size;
  vq.quantizer.patch_nums = a.patch_nums;
  vq.quantizer.phi_count = a.share_quant_resi;
  p.tokenizer.kind = TokenizerKind::multiscale_vq_vae;
  p.tokenizer.multiscale_vq_vae = vq;

  GeneratorConfig& g = p.generator;
  g.backbone = var_style_config(a.width, a.depth, a.heads, a.patch_nums, a.vae_channels,
                                a.num_classes, a.shared_adaln);
  g.backbone.qk_l2_norm = a.attn_l2_norm;
  g.backbone.norm_eps = a.norm_eps;
  g.backbone.drop_path = 0.1 * static_cast<double>(a.depth) / 24.0;  // VAR's train.py
  g.head.kind = HeadKind::discrete;
  g.head.discrete.width = a.width;
  g.head.discrete.vocab_size = a.vocab_size;
  g.head.discrete.projection = DiscreteProjection::adaln;
  g.head.discrete.condition_width = a.width;
  g.head.discrete.norm_eps = a.norm_eps;
  g.schedule.kind = ScheduleKind::next_scale;
  g.sampling.guidance = Guidance::var_scale_ramp(4.0);
  g.sampling.head.discrete.top_k = std::min<int64_t>(900, a.vocab_size);
  g.sampling.head.discrete.top_p = 0.95;
  g.image_size = a.image_size;
  g.image_channels = 3;
  return p;
}


std::vector<std::string> generator_preset_names() {
  std::vector<std::string> names;
  for (const VarSize& size : kVarSizes) names.push_back(fmt::format("var-d{}", size.depth));
  return names;
}

GeneratorPreset generator_preset(const std::string& name) {
  for (const VarSize& size : kVarSizes) {
    if (name != fmt::format("var-d{}", size.depth)) continue;
    VarArchitecture a;
    a.depth = size.depth;
    a.width = 64 * size.depth;
    a.heads = size.depth;
    GeneratorPreset p = var_generator_preset(a);
    p.name = name;
    p.description = fmt::format(
        "VAR-d{} (FoundationVision/VAR, ImageNet 256x256): width {}, {} heads, {} blocks, over "
        "VAR's VQ-VAE vae_ch160v4096z32",
        a.depth, a.width, a.heads, a.depth);
    p.published_parameters = size.published_parameters;
    return p;
  }
  TESSERA_FAIL("unknown preset '{}'; the presets are {}", name,
               fmt::join(generator_preset_names(), ", "));
}

int64_t transformer_parameter_count(const GeneratorConfig& config) {
  int64_t total = config.backbone.parameter_count();
  if (config.decoder) total += config.decoder->parameter_count();
  for (const auto& p : make_head(config.head, 0)->parameters()) total += p.numel();
  return total;
}

}  // namespace tessera
