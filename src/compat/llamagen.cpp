#include "tessera/compat/llamagen.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <string>
#include <vector>

#include "compat/reference_metadata.h"
#include "tessera/core/error.h"
#include "tessera/schedule/raster_schedule.h"

namespace tessera {

namespace {

constexpr std::string_view kSource = "LlamaGen metadata";

const std::string& text(const std::map<std::string, std::string>& metadata,
                        const std::string& key) {
  return compat_detail::metadata_text(metadata, key, kSource);
}

// A backbone key under LlamaGen's name: Backbone::llamagen_key_renames undone, last first.
std::string llamagen_name(std::string key) {
  const auto renames = Backbone::llamagen_key_renames();
  for (auto it = renames.rbegin(); it != renames.rend(); ++it) {
    if (const size_t at = key.find(it->second); at != std::string::npos) {
      key.replace(at, it->second.size(), it->first);
    }
  }
  return key;
}

}  // namespace

int64_t llamagen_ffn_hidden(int64_t width, int64_t multiple_of) {
  const int64_t hidden = 2 * 4 * width / 3;  // find_multiple(int(2 * 4 * dim / 3), multiple_of)
  return (hidden + multiple_of - 1) / multiple_of * multiple_of;
}

LlamagenArchitecture llamagen_architecture_from_metadata(
    const std::map<std::string, std::string>& metadata) {
  using compat_detail::metadata_integer;
  using compat_detail::metadata_number;
  TESSERA_CHECK(text(metadata, "gpt.model_type") == "c2i",
                "{}: gpt.model_type is '{}'; Tessera runs LlamaGen's class-conditional (c2i) GPT",
                kSource, text(metadata, "gpt.model_type"));
  TESSERA_CHECK(text(metadata, "gpt.rope") == "2d",
                "{}: gpt.rope is '{}'; Tessera runs LlamaGen's 2-D rotary embedding ('2d')",
                kSource, text(metadata, "gpt.rope"));
  LlamagenArchitecture a;
  a.width = metadata_integer(metadata, "gpt.dim", kSource);
  a.depth = metadata_integer(metadata, "gpt.n_layer", kSource);
  a.heads = metadata_integer(metadata, "gpt.n_head", kSource);
  a.vocab_size = metadata_integer(metadata, "gpt.vocab_size", kSource);
  a.num_classes = metadata_integer(metadata, "gpt.num_classes", kSource);
  a.grid = metadata_integer(metadata, "grid_size", kSource);
  a.norm_eps = metadata_number(metadata, "gpt.norm_eps", kSource);
  a.rope_base = metadata_number(metadata, "gpt.rope_base", kSource);
  const auto kv_heads = metadata.find("gpt.n_kv_head");
  TESSERA_CHECK(kv_heads == metadata.end() || kv_heads->second == "None" ||
                    compat_detail::parse_metadata_integer(kv_heads->second, "gpt.n_kv_head",
                                                          kSource) == a.heads,
                "{}: gpt.n_kv_head is {} but gpt.n_head is {}; grouped-query attention is not "
                "supported",
                kSource, kv_heads->second, a.heads);
  const int64_t class_tokens = metadata_integer(metadata, "gpt.cls_token_num", kSource);
  TESSERA_CHECK(class_tokens == 1, "{}: gpt.cls_token_num is {}; LlamaGen's c2i models use 1",
                kSource, class_tokens);
  const int64_t block_size = metadata_integer(metadata, "gpt.block_size", kSource);
  TESSERA_CHECK(block_size == a.grid * a.grid,
                "{}: gpt.block_size {} is not grid_size² = {}", kSource, block_size,
                a.grid * a.grid);
  a.ffn_hidden = llamagen_ffn_hidden(
      a.width, compat_detail::metadata_integer_or(metadata, "gpt.multiple_of", 256, kSource));
  const int64_t recorded = compat_detail::metadata_integer_or(metadata, "gpt.ffn_hidden_dim",
                                                              a.ffn_hidden, kSource);
  TESSERA_CHECK(recorded == a.ffn_hidden,
                "{}: gpt.ffn_hidden_dim {} differs from LlamaGen's rule for dim {} ({})", kSource,
                recorded, a.width, a.ffn_hidden);
  TESSERA_CHECK(a.width > 0 && a.depth > 0 && a.heads > 0 && a.width % a.heads == 0 &&
                    a.vocab_size > 0 && a.num_classes > 0 && a.grid > 0,
                "{}: sizes out of range (dim {}, n_layer {}, n_head {}, vocab_size {}, "
                "num_classes {}, grid_size {})",
                kSource, a.width, a.depth, a.heads, a.vocab_size, a.num_classes, a.grid);
  return a;
}

BackboneConfig llamagen_backbone_config(const LlamagenArchitecture& a) {
  BackboneConfig c =
      llamagen_style_config(a.width, a.depth, a.heads, a.grid, a.vocab_size, a.num_classes);
  c.mlp_hidden = a.ffn_hidden;
  c.norm_eps = a.norm_eps;
  c.rope_base = a.rope_base;
  c.validate();
  return c;
}

DiscreteHeadConfig llamagen_head_config(const LlamagenArchitecture& a) {
  DiscreteHeadConfig c;
  c.width = a.width;
  c.vocab_size = a.vocab_size;
  c.projection = DiscreteProjection::linear;
  c.bias = false;
  c.validate();
  return c;
}

GenerationOptions llamagen_default_sampling(int64_t vocab_size) {
  GenerationOptions options;
  options.guidance = Guidance::constant(4.0);
  options.head.temperature = 1.0;
  options.head.discrete.top_k = std::min<int64_t>(2000, vocab_size);
  options.head.discrete.top_p = 1.0;
  return options;
}

GenerationOptions llamagen_sampling_from_metadata(
    const std::map<std::string, std::string>& metadata, GenerationOptions defaults) {
  using compat_detail::metadata_number;
  constexpr std::string_view source = "LlamaGen sampling metadata";
  if (metadata.contains("cfg_scale") || metadata.contains("cfg_interval")) {
    const double scale = metadata.contains("cfg_scale")
                             ? metadata_number(metadata, "cfg_scale", source)
                             : defaults.guidance.scale;
    const int64_t interval =
        compat_detail::metadata_integer_or(metadata, "cfg_interval", -1, source);
    TESSERA_CHECK(interval >= -1, "{}: cfg_interval is {}; LlamaGen takes -1 or a step >= 0",
                  source, interval);
    // generate(): no unconditional half unless cfg_scale > 1; cfg_interval k guides the prefill
    // token and decode steps 0..k, i.e. the first k + 2 tokens.
    defaults.guidance = scale <= 1.0     ? Guidance::none()
                        : interval == -1 ? Guidance::constant(scale)
                                         : Guidance::cutoff(scale, interval + 2);
  }
  if (metadata.contains("temperature")) {
    defaults.head.temperature = metadata_number(metadata, "temperature", source);
  }
  if (metadata.contains("top_k")) {
    defaults.head.discrete.top_k = compat_detail::metadata_integer(metadata, "top_k", source);
  }
  if (metadata.contains("top_p")) {
    defaults.head.discrete.top_p = metadata_number(metadata, "top_p", source);
  }
  defaults.head.validate();
  return defaults;
}

GeneratorPreset llamagen_generator_preset(const LlamagenArchitecture& a,
                                          const VqVaeConfig& tokenizer) {
  GeneratorPreset p;
  p.family = PresetFamily::llamagen;
  p.tokenizer.kind = TokenizerKind::vq_vae;
  p.tokenizer.vq_vae = tokenizer;
  GeneratorConfig& g = p.generator;
  g.backbone = llamagen_backbone_config(a);
  g.head.kind = HeadKind::discrete;
  g.head.discrete = llamagen_head_config(a);
  g.schedule.kind = ScheduleKind::raster;
  g.schedule.raster = RasterScheduleConfig{};
  g.sampling = llamagen_default_sampling(a.vocab_size);
  g.image_size = a.grid * tokenizer.autoencoder.downsampling_factor();
  g.image_channels = tokenizer.autoencoder.image_channels;
  return p;
}

void load_llamagen_transformer(Generator& generator,
                               const std::map<std::string, at::Tensor>& state_dict) {
  auto* head = dynamic_cast<DiscreteHead*>(&generator.head());
  TESSERA_CHECK(head != nullptr && generator.config().schedule.kind == ScheduleKind::raster,
                "LlamaGen transformer: the generator is not a LlamaGen one (raster schedule, "
                "discrete head); build it from a llamagen preset");
  load_llamagen_transformer(generator.backbone(), *head, state_dict);
}

void load_llamagen_transformer(Backbone& backbone, DiscreteHead& head,
                               const std::map<std::string, at::Tensor>& state_dict) {
  const auto output = state_dict.find("output.weight");
  const auto& hc = head.discrete_config();
  TESSERA_CHECK(output != state_dict.end(),
                "LlamaGen transformer: 'output.weight' (the head) is missing");
  TESSERA_CHECK(output->second.dim() == 2 && output->second.size(0) == hc.vocab_size &&
                    output->second.size(1) == hc.width,
                "LlamaGen transformer: 'output.weight' is [{}], expected [{}, {}]",
                fmt::join(output->second.sizes(), ", "), hc.vocab_size, hc.width);
  // Missing tensors named as the checkpoint names them (the strict load below would name them as
  // the backbone does).
  std::vector<std::string> missing;
  for (const auto& [key, tensor] : backbone.state_dict()) {
    if (!state_dict.contains(llamagen_name(key))) missing.push_back(llamagen_name(key));
  }
  TESSERA_CHECK(missing.empty(), "LlamaGen transformer: missing {}", fmt::join(missing, ", "));
  // The backbone's strict load checks every key before copying anything; the head's one tensor
  // is checked above, so a wrong checkpoint changes nothing.
  const StateDictLoadReport report =
      backbone.load_state_dict(state_dict, {.strict = true,
                                            .ignore_prefixes = {"output.", "freqs_cis"},
                                            .renames = Backbone::llamagen_key_renames()});
  TESSERA_CHECK(report.complete(), "LlamaGen transformer: {}", report.summary());
  head.load_state_dict({{"head.weight", output->second}});
}

}  // namespace tessera
