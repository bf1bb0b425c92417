#include "tessera/compat/presets.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>

#include "compat/reference_metadata.h"
#include "tessera/compat/llamagen.h"
#include "tessera/compat/llamagen_vq.h"
#include "tessera/compat/mar.h"
#include "tessera/compat/mar_vae.h"
#include "tessera/compat/preset_state_dicts.h"
#include "tessera/compat/var_vae.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/head/head.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/backbone.h"
#include "tessera/schedule/hmar_schedule.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {

namespace {

struct VarSize {
  int64_t depth;
  int64_t published_parameters;
};
// The sizes VAR publishes for its checkpoints: 310 M, 600 M, 1.0 B, 2.0 B.
constexpr VarSize kVarSizes[] = {
    {16, 310'000'000}, {20, 600'000'000}, {24, 1'000'000'000}, {30, 2'000'000'000}};

// VAR's metadata, through the shared readers (compat/reference_metadata.h).
constexpr std::string_view kVarMetadata = "VAR metadata";

int64_t parse_integer(const std::string& text, const std::string& key) {
  return compat_detail::parse_metadata_integer(text, key, kVarMetadata);
}

double parse_number(const std::string& text, const std::string& key) {
  return compat_detail::parse_metadata_number(text, key, kVarMetadata);
}

int64_t parse_int(const std::map<std::string, std::string>& m, const std::string& key) {
  return compat_detail::metadata_integer(m, key, kVarMetadata);
}

bool parse_bool(const std::map<std::string, std::string>& m, const std::string& key,
                bool fallback) {
  return compat_detail::metadata_bool(m, key, fallback, kVarMetadata);
}

// HMAR's published models: depth, the sampling settings of config/sample/hmar-d{depth}.yaml, and
// the reference module's parameter count (build_vae_hmar at 595a9df, both tails and both heads).
struct HmarSize {
  int64_t depth;
  double cfg;
  int64_t top_k;
  int64_t reference_parameters;
};
constexpr HmarSize kHmarSizes[] = {{16, 1.7, 1000, 467'691'904},
                                   {20, 1.9, 950, 845'517'872},
                                   {24, 2.1, 900, 1'384'328'960},
                                   {30, 1.7, 1000, 2'556'324'212}};

// LlamaGen's c2i models (gpt.py GPT_B ... GPT_3B: dim, n_layer, n_head) with the parameter counts
// of the reference modules (FoundationVision/LlamaGen at ce98ec4, vocab 16384, 1000 classes, one
// class token; the same at 256 and 384 px, since the rotary table is not a parameter). The paper
// publishes 111M, 343M, 775M, 1.4B and 3.1B.
struct LlamagenSize {
  const char* size;
  const char* reference_name;
  int64_t width, depth, heads;
  int64_t reference_parameters;
};
constexpr LlamagenSize kLlamagenSizes[] = {{"b", "GPT-B", 768, 12, 12, 110'888'448},
                                           {"l", "GPT-L", 1024, 24, 16, 342'910'976},
                                           {"xl", "GPT-XL", 1280, 36, 20, 774'699'520},
                                           {"xxl", "GPT-XXL", 1536, 48, 24, 1'410'972'672},
                                           {"3b", "GPT-3B", 3200, 24, 32, 3'096'659'200}};
// The token grids of LlamaGen's two resolutions with VQ-16: 256 px and 384 px.
constexpr int64_t kLlamagenGrids[] = {16, 24};

std::string llamagen_preset_name(const LlamagenSize& size, int64_t grid) {
  return grid == 16 ? fmt::format("llamagen-{}", size.size)
                    : fmt::format("llamagen-{}-{}", size.size, grid * 16);
}

// HMAR's default mask_schedule (utils/sampling_arg_util.py) keyed by a scale's token count:
// the 2x2 scale refines once (1 then 3), the 3x3 scale three times (1, 1, 2, 5), the others not.
std::vector<int64_t> hmar_mask_steps(int64_t tokens) {
  if (tokens == 4) return {1, 3};
  if (tokens == 9) return {1, 1, 2, 5};
  return {tokens};
}

// The published VAR and HMAR models at `depth`: width 64·depth, depth heads, the defaults else.
VarArchitecture published_architecture(int64_t depth) {
  VarArchitecture a;
  a.depth = depth;
  a.width = 64 * depth;
  a.heads = depth;
  return a;
}

// "12.attn.proj.weight" → (12, "attn.proj.weight").
std::pair<int64_t, std::string> block_index(const std::string& rest, const std::string& key) {
  const size_t dot = rest.find('.');
  TESSERA_CHECK(dot != std::string::npos && dot > 0,
                "HMAR state dict: '{}' has no block index", key);
  return {parse_integer(rest.substr(0, dot), key), rest.substr(dot + 1)};
}

// Throws naming every missing, unexpected or mis-shaped key of `tensors` against the head's
// state dict, so that a loader can check every part before copying into any.
void check_head_fits(const Head& head, const std::map<std::string, at::Tensor>& tensors,
                     const char* what) {
  const std::map<std::string, at::Tensor> expected = head.state_dict();
  std::vector<std::string> problems;
  for (const auto& [key, tensor] : expected) {
    const auto it = tensors.find(key);
    if (it == tensors.end()) {
      problems.push_back(fmt::format("missing {}", key));
    } else if (it->second.sizes() != tensor.sizes()) {
      problems.push_back(
          fmt::format("{} has shape {}, expected {}", key, it->second.sizes(), tensor.sizes()));
    }
  }
  for (const auto& [key, tensor] : tensors) {
    if (!expected.contains(key)) problems.push_back(fmt::format("unexpected {}", key));
  }
  TESSERA_CHECK(problems.empty(), "{}: {}", what, fmt::join(problems, "; "));
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
    a.norm_eps = parse_number(it->second, "norm_eps");
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


// Note [HMAR presets].
GeneratorPreset hmar_generator_preset(const VarArchitecture& a, int64_t tail_blocks) {
  TESSERA_CHECK(tail_blocks >= 1 && tail_blocks <= a.depth,
                "HMAR preset: the tails must have 1..depth = {} blocks, got {}", a.depth,
                tail_blocks);
  GeneratorPreset p = var_generator_preset(a);
  p.family = PresetFamily::hmar;
  GeneratorConfig& g = p.generator;
  g.backbone.input_channels = a.vae_channels + 1;  // the mask indicator: mask_embed's column
  g.backbone.branch_blocks = tail_blocks;
  g.refinement_head = g.head;
  g.schedule.kind = ScheduleKind::hmar;
  HmarScheduleConfig hmar;
  for (int64_t pn : a.patch_nums) {
    hmar.sampling.mask_schedule.push_back(hmar_mask_steps(pn * pn));
  }
  g.schedule.hmar = hmar;
  g.sampling.head.discrete.top_p = 0.99;
  return p;
}

std::vector<std::string> generator_preset_names() {
  std::vector<std::string> names;
  for (const VarSize& size : kVarSizes) names.push_back(fmt::format("var-d{}", size.depth));
  for (const HmarSize& size : kHmarSizes) names.push_back(fmt::format("hmar-d{}", size.depth));
  for (const int64_t grid : kLlamagenGrids) {
    for (const LlamagenSize& size : kLlamagenSizes)
      names.push_back(llamagen_preset_name(size, grid));
  }
  for (const MarPublishedModel& m : mar_published_models()) names.push_back("mar-" + m.size);
  return names;
}

GeneratorPreset generator_preset(const std::string& name) {
  for (const VarSize& size : kVarSizes) {
    if (name != fmt::format("var-d{}", size.depth)) continue;
    const VarArchitecture a = published_architecture(size.depth);
    GeneratorPreset p = var_generator_preset(a);
    p.name = name;
    p.description = fmt::format(
        "VAR-d{} (FoundationVision/VAR, ImageNet 256x256): width {}, {} heads, {} blocks, over "
        "VAR's VQ-VAE vae_ch160v4096z32",
        a.depth, a.width, a.heads, a.depth);
    p.published_parameters = size.published_parameters;
    return p;
  }
  for (const HmarSize& size : kHmarSizes) {
    if (name != fmt::format("hmar-d{}", size.depth)) continue;
    const VarArchitecture a = published_architecture(size.depth);
    GeneratorPreset p = hmar_generator_preset(a);
    p.generator.sampling.guidance = Guidance::var_scale_ramp(size.cfg);
    p.generator.sampling.head.discrete.top_k = size.top_k;
    p.name = name;
    p.description = fmt::format(
        "HMAR-d{} (NVlabs/HMAR, ImageNet 256x256): width {}, {} heads, {} base + {} next-scale + "
        "{} masked-prediction blocks, over VAR's VQ-VAE vae_ch160v4096z32",
        a.depth, a.width, a.heads, a.depth - kHmarTailBlocks, kHmarTailBlocks, kHmarTailBlocks);
    p.published_parameters = size.reference_parameters;
    p.parameters_source = "reference module (NVlabs/HMAR build_vae_hmar)";
    return p;
  }
  for (const int64_t grid : kLlamagenGrids) {
    for (const LlamagenSize& size : kLlamagenSizes) {
      if (name != llamagen_preset_name(size, grid)) continue;
      LlamagenArchitecture a;  // over VQ-16's codes and ImageNet's classes
      a.width = size.width;
      a.depth = size.depth;
      a.heads = size.heads;
      a.vocab_size = 16384;
      a.num_classes = 1000;
      a.grid = grid;
      a.ffn_hidden = llamagen_ffn_hidden(size.width);
      GeneratorPreset p = llamagen_generator_preset(a, llamagen_vq_preset_config());
      p.name = name;
      p.description = fmt::format(
          "LlamaGen {} c2i (FoundationVision/LlamaGen, ImageNet {}x{}): width {}, {} heads, {} "
          "blocks, raster order over {}x{} tokens of LlamaGen's VQ-16",
          size.reference_name, grid * 16, grid * 16, a.width, a.heads, a.depth, grid, grid);
      p.published_parameters = size.reference_parameters;
      p.parameters_source = "reference module (FoundationVision/LlamaGen gpt.py, c2i)";
      return p;
    }
  }
  for (const MarPublishedModel& m : mar_published_models()) {
    if (name != "mar-" + m.size) continue;
    const MarArchitecture& a = m.architecture;
    GeneratorPreset p = mar_generator_preset(a, mar_kl16_config());
    p.generator.sampling = mar_default_sampling(m.cfg);
    p.name = name;
    p.description = fmt::format(
        "MAR {} (LTH14/mar, ImageNet 256x256): encoder and decoder {} wide with {} blocks and {} "
        "heads, DiffLoss {} blocks of width {}, over {}x{} tokens of MAR's KL-16",
        m.reference_name, a.encoder_width, a.encoder_depth, a.encoder_heads, a.diffloss_depth,
        a.diffloss_width, a.grid, a.grid);
    p.published_parameters = m.reference_parameters;
    p.parameters_source = "reference module (LTH14/mar models/mar.py, DiffLoss included)";
    return p;
  }
  TESSERA_FAIL("unknown preset '{}'; the presets are {}", name,
               fmt::join(generator_preset_names(), ", "));
}

int64_t transformer_parameter_count(const GeneratorConfig& config) {
  int64_t total = config.backbone.parameter_count();
  if (config.decoder) total += config.decoder->parameter_count();
  for (const auto& p : make_head(config.head, 0)->parameters()) total += p.numel();
  if (config.refinement_head) {
    for (const auto& p : make_head(*config.refinement_head, 0)->parameters()) total += p.numel();
  }
  return total;
}

GenerationOptions var_sampling_from_metadata(const std::map<std::string, std::string>& metadata,
                                             GenerationOptions defaults) {
  const auto number = [&](const std::string& key) -> std::optional<double> {
    const auto it = metadata.find(key);
    if (it == metadata.end()) return std::nullopt;
    return parse_number(it->second, key);
  };
  if (const auto cfg = number("cfg")) defaults.guidance = Guidance::var_scale_ramp(*cfg);
  if (metadata.contains("top_k")) {
    defaults.head.discrete.top_k = parse_integer(metadata.at("top_k"), "top_k");
  }
  if (const auto top_p = number("top_p")) {
    // VAR filters only when top_p > 0; Tessera's "keep everything" is 1.
    defaults.head.discrete.top_p = *top_p > 0 ? *top_p : 1.0;
  }
  defaults.head.validate();
  return defaults;
}

void load_var_transformer(Generator& generator,
                          const std::map<std::string, at::Tensor>& state_dict) {
  std::map<std::string, at::Tensor> head_tensors;
  for (const auto& [key, tensor] : state_dict) {
    if (key.starts_with("head.") || key.starts_with("head_nm.")) head_tensors.emplace(key, tensor);
  }
  // The head is checked first and the backbone's strict load checks before copying, so a wrong
  // checkpoint changes nothing.
  check_head_fits(generator.head(), head_tensors, "VAR transformer, head");
  const StateDictLoadReport report = generator.backbone().load_state_dict(
      state_dict, {.strict = true, .ignore_prefixes = {"head.", "head_nm."}});
  TESSERA_CHECK(report.complete(), "VAR transformer: {}", report.summary());
  generator.head().load_state_dict(head_tensors);
}

HmarStateDicts hmar_state_dicts(const std::map<std::string, at::Tensor>& state_dict,
                                int64_t tail_start) {
  HmarStateDicts out;
  at::Tensor word, mask;
  const auto after = [](const std::string& key, const std::string& prefix) {
    return key.substr(prefix.size());
  };
  for (const auto& [key, tensor] : state_dict) {
    if (key == "lvl_1L" || key == "attn_bias_for_masking") {
      out.derived.push_back(key);
    } else if (key == "word_embed.weight") {
      word = tensor;
    } else if (key == "mask_embed.weight") {
      mask = tensor;
    } else if (key == "word_embed_bias") {
      out.backbone["word_embed.bias"] = tensor;
    } else if (key.starts_with("base_blocks.")) {
      out.backbone["blocks." + after(key, "base_blocks.")] = tensor;
    } else if (key.starts_with("ns_blocks.")) {
      const auto [j, rest] = block_index(after(key, "ns_blocks."), key);
      out.backbone[fmt::format("blocks.{}.{}", tail_start + j, rest)] = tensor;
    } else if (key.starts_with("mask_blocks.")) {
      out.backbone["branch_blocks." + after(key, "mask_blocks.")] = tensor;
    } else if (key.starts_with("ns_head_nm.")) {
      out.head["head_nm." + after(key, "ns_head_nm.")] = tensor;
    } else if (key.starts_with("ns_head.")) {
      out.head["head." + after(key, "ns_head.")] = tensor;
    } else if (key.starts_with("mask_head_nm.")) {
      out.refinement_head["head_nm." + after(key, "mask_head_nm.")] = tensor;
    } else if (key.starts_with("mask_head.")) {
      out.refinement_head["head." + after(key, "mask_head.")] = tensor;
    } else {
      out.backbone[key] = tensor;  // class_emb, pos_start, pos_1LC, lvl_embed: VAR's names
    }
  }
  TESSERA_CHECK(word.defined(), "HMAR state dict: 'word_embed.weight' is missing");
  TESSERA_CHECK(mask.defined(), "HMAR state dict: 'mask_embed.weight' (the mask token) is missing");
  TESSERA_CHECK(word.dim() == 2 && mask.dim() == 2 && mask.size(0) == 1 &&
                    mask.size(1) == word.size(0),
                "HMAR state dict: mask_embed.weight must be [1, {}] beside word_embed.weight {}, "
                "got {}",
                word.dim() == 2 ? word.size(0) : 0, word.sizes(), mask.sizes());
  // Linear([x, m]) = W·x + m·mask_embed + b: the indicator's column is the mask token.
  out.backbone["word_embed.weight"] = at::cat({word, mask.t().to(word.scalar_type())}, 1);
  return out;
}

void load_hmar_transformer(Generator& generator,
                           const std::map<std::string, at::Tensor>& state_dict) {
  TESSERA_CHECK(generator.refinement_head() != nullptr &&
                    generator.backbone().config().branch_blocks > 0,
                "HMAR transformer: the generator has no masked-prediction tail (branch blocks and "
                "a refinement head); build it from an hmar preset");
  const BackboneConfig& bc = generator.backbone().config();
  const HmarStateDicts parts = hmar_state_dicts(state_dict, bc.depth - bc.branch_blocks);
  // Every part is checked before anything is copied, so a wrong checkpoint changes nothing.
  check_head_fits(generator.head(), parts.head, "HMAR transformer, ns_head (as head.*)");
  check_head_fits(*generator.refinement_head(), parts.refinement_head,
                  "HMAR transformer, mask_head (as head.*)");
  const StateDictLoadReport report =
      generator.backbone().load_state_dict(parts.backbone, {.strict = true});
  TESSERA_CHECK(report.complete(), "HMAR transformer (Tessera's names, docs/compat.md): {}",
                report.summary());
  generator.head().load_state_dict(parts.head);
  generator.refinement_head()->load_state_dict(parts.refinement_head);
}

namespace {

// The transformer's tensors, by the preset family's key names.
void load_preset_transformer(const GeneratorPreset& preset, Generator& generator,
                             const std::map<std::string, at::Tensor>& state_dict) {
  switch (preset.family) {
    case PresetFamily::var:
      load_var_transformer(generator, state_dict);
      return;
    case PresetFamily::hmar:
      load_hmar_transformer(generator, state_dict);
      return;
    case PresetFamily::llamagen:
      load_llamagen_transformer(generator, state_dict);
      return;
    case PresetFamily::mar:
      load_mar_transformer(generator, state_dict);
      return;
  }
}

// The tokenizer from the reference's state dict: VAR's VQ-VAE keeps Tessera's layout (the
// preset's architecture, strictly); LlamaGen's VQModel is renamed and its architecture read from
// the tensors (llamagen_vq.h).
std::unique_ptr<Tokenizer> preset_tokenizer(const GeneratorPreset& preset,
                                            const std::map<std::string, at::Tensor>& state_dict,
                                            uint64_t init_seed) {
  if (preset.family == PresetFamily::llamagen) {
    auto vq = std::make_unique<VqVae>(llamagen_vq_config(state_dict), init_seed);
    load_llamagen_vq(*vq, state_dict);
    return vq;
  }
  if (preset.family == PresetFamily::mar) {
    auto vae = std::make_unique<KlVae>(mar_vae_config(state_dict), init_seed);
    load_mar_vae(*vae, state_dict);
    return vae;
  }
  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(preset.tokenizer, init_seed);
  tokenizer->load_state_dict(state_dict);
  return tokenizer;
}

}  // namespace

Generator build_preset_generator(const GeneratorPreset& preset, const PresetWeights& weights) {
  std::shared_ptr<Tokenizer> tokenizer;
  if (weights.tokenizer.empty()) {
    tokenizer = make_tokenizer(preset.tokenizer, derive_seed(weights.init_seed, 3));
  } else if (preset.family == PresetFamily::llamagen) {
    tokenizer = load_llamagen_vq(weights.tokenizer);
  } else if (preset.family == PresetFamily::mar) {
    tokenizer = load_mar_vae(weights.tokenizer);
  } else {
    tokenizer = load_var_vae(weights.tokenizer);
  }
  Generator generator(preset.generator, std::move(tokenizer), weights.init_seed);
  if (!weights.transformer.empty()) {
    const SafetensorsFile file = SafetensorsFile::open(weights.transformer);
    load_preset_transformer(preset, generator, file.all());
  }
  return generator;
}

Generator preset_generator_from_state_dicts(const GeneratorPreset& preset,
                                            const PresetStateDicts& weights) {
  const uint64_t tokenizer_seed = derive_seed(weights.init_seed, 3);
  std::unique_ptr<Tokenizer> tokenizer =
      weights.tokenizer.empty() ? make_tokenizer(preset.tokenizer, tokenizer_seed)
                                : preset_tokenizer(preset, weights.tokenizer, tokenizer_seed);
  Generator generator(preset.generator, std::move(tokenizer), weights.init_seed);
  if (!weights.transformer.empty()) load_preset_transformer(preset, generator, weights.transformer);
  return generator;
}

GeneratorPreset preset_from_reference_metadata(
    const std::map<std::string, std::string>& metadata, PresetFamily family,
    const std::map<std::string, at::Tensor>& state_dict) {
  if (family == PresetFamily::mar) {
    TESSERA_CHECK(!state_dict.empty(),
                  "MAR's architecture is read from its transformer's tensors; none were given");
    const MarArchitecture a = mar_architecture(state_dict, metadata);
    GeneratorPreset preset = mar_generator_preset(a, mar_kl16_config());
    apply_mar_sampling_metadata(metadata, preset.generator);
    return preset;
  }
  if (family == PresetFamily::llamagen) {
    const LlamagenArchitecture a = llamagen_architecture_from_metadata(metadata);
    GeneratorPreset preset = llamagen_generator_preset(a, llamagen_vq_preset_config(a.vocab_size));
    preset.generator.sampling =
        llamagen_sampling_from_metadata(metadata, preset.generator.sampling);
    return preset;
  }
  const VarArchitecture a = var_architecture_from_metadata(metadata);
  GeneratorPreset preset =
      family == PresetFamily::hmar ? hmar_generator_preset(a) : var_generator_preset(a);
  preset.generator.sampling = var_sampling_from_metadata(metadata, preset.generator.sampling);
  return preset;
}

PresetFamily reference_family(const std::vector<std::string>& keys) {
  const auto has = [&](const char* key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  };
  // LlamaGen's GPT by its token table; MAR by its token projection beside a DiffLoss; HMAR's
  // checkpoints by their mask token (its tails are 8 blocks, build_vae_hmar); VAR's otherwise.
  if (has("tok_embeddings.weight")) return PresetFamily::llamagen;
  if (has("z_proj.weight") && has("diffloss.net.input_proj.weight")) return PresetFamily::mar;
  if (has("mask_embed.weight")) return PresetFamily::hmar;
  return PresetFamily::var;
}

GeneratorPreset preset_from_reference_weights(const std::filesystem::path& weights) {
  const SafetensorsFile file = SafetensorsFile::open(weights);
  const PresetFamily family = reference_family(file.names());
  if (family == PresetFamily::mar) {
    // MAR's sizes are in its tensors' shapes (mar_architecture).
    GeneratorPreset preset = preset_from_reference_metadata(file.metadata(), family, file.all());
    preset.name = weights.string();
    return preset;
  }
  GeneratorPreset preset;
  try {
    preset = preset_from_reference_metadata(file.metadata(), family);
  } catch (const Error& e) {
    TESSERA_FAIL(
        "{} needs {}'s architecture in its __metadata__ ({}); name a preset instead, or "
        "add the metadata with tools/convert_checkpoint.py --metadata",
        weights.string(), family == PresetFamily::llamagen ? "LlamaGen" : "VAR", e.what());
  }
  preset.name = weights.string();
  return preset;
}

}  // namespace tessera
