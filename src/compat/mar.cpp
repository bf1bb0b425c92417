#include "tessera/compat/mar.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "compat/reference_metadata.h"
#include "tessera/compat/mar_diffloss.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/schedule/mar_schedule.h"

namespace tessera {

namespace {

constexpr std::string_view kSource = "MAR metadata";

// sample_tokens doubles the batch unless cfg == 1.0; its linear cfg_schedule is the token ramp.
Guidance mar_guidance(double cfg, bool linear) {
  return cfg == 1.0 ? Guidance::none()
         : linear   ? Guidance::mar_token_ramp(cfg)
                    : Guidance::constant(cfg);
}

at::IntArrayRef shape_of(const std::map<std::string, at::Tensor>& state_dict,
                         const std::string& key) {
  return compat_detail::reference_tensor_shape(state_dict, key, "MAR transformer",
                                               "a MAR state dict (models/mar.py)");
}

int64_t count_blocks(const std::map<std::string, at::Tensor>& state_dict,
                     const std::string& stack) {
  int64_t depth = 0;
  while (state_dict.contains(fmt::format("{}_blocks.{}.norm1.weight", stack, depth))) ++depth;
  TESSERA_CHECK(depth > 0, "MAR transformer: no {}_blocks.0 tensors (not a MAR state dict)", stack);
  return depth;
}

// MAR's name of a tensor of one stack ("encoder" or "decoder"), for the tensors whose mapping is
// a rename (docs/compat.md, "MAR").
std::string mar_name(const std::string& key, const std::string& stack) {
  const bool encoder = stack == "encoder";
  if (key == "norm.weight" || key == "norm.bias") return stack + "_" + key;
  if (key == "pos_1LC") return stack + "_pos_embed_learned";
  if (key == "pos_out") return "diffusion_pos_embed_learned";
  if (key.starts_with("word_embed."))
    return (encoder ? "z_proj." : "decoder_embed.") + key.substr(11);
  if (key.starts_with("input_norm.")) return "z_proj_ln." + key.substr(11);
  std::string name = key;
  if (name.starts_with("blocks.")) name = stack + "_" + name;
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{".attn.mat_qkv.", ".attn.qkv."}, {".ffn.", ".mlp."}}) {
    if (const size_t at = name.find(from); at != std::string::npos)
      name.replace(at, from.size(), to);
  }
  return name;
}

struct StackTensors {
  std::map<std::string, at::Tensor> tensors;  // Tessera's names
  std::vector<std::string> problems;          // MAR's names
  std::set<std::string> used;                 // MAR's names read
};

// The tensors of one stack in Tessera's names, from MAR's.
void collect_stack(const Backbone& backbone, const std::string& stack,
                   const std::map<std::string, at::Tensor>& sd, StackTensors& out) {
  const auto take = [&](const std::string& name) -> at::Tensor {
    const auto it = sd.find(name);
    if (it == sd.end()) {
      out.problems.push_back(fmt::format("missing {}", name));
      return {};
    }
    out.used.insert(name);
    return it->second;
  };
  for (const auto& [key, expected] : backbone.state_dict()) {
    at::Tensor value;
    std::string described;
    if (key == "class_emb.weight" && stack == "encoder") {
      // MAR's class_emb has no null row; guidance uses the learned fake_latent.
      const at::Tensor classes = take("class_emb.weight"), fake = take("fake_latent");
      if (!classes.defined() || !fake.defined()) continue;
      described =
          fmt::format("class_emb.weight {} and fake_latent {}", classes.sizes(), fake.sizes());
      if (classes.dim() == 2 && fake.numel() == classes.size(1)) {
        value = at::cat({classes, fake.reshape({1, -1}).to(classes.scalar_type())});
      }
    } else if (key == "word_embed.weight" && stack == "decoder") {
      // Note [MAR mask inputs]: the indicator's column plus the bias is the mask token.
      const at::Tensor weight = take("decoder_embed.weight"), bias = take("decoder_embed.bias"),
                       token = take("mask_token");
      if (!weight.defined() || !bias.defined() || !token.defined()) continue;
      described = fmt::format("decoder_embed.weight {}, decoder_embed.bias {} and mask_token {}",
                              weight.sizes(), bias.sizes(), token.sizes());
      if (weight.dim() == 2 && bias.numel() == weight.size(0) && token.numel() == weight.size(0)) {
        const at::Tensor column = token.reshape({-1}).to(weight.scalar_type()) - bias.reshape({-1});
        value = at::cat({weight, column.unsqueeze(1)}, 1);
      }
    } else {
      const std::string name = mar_name(key, stack);
      value = take(name);
      if (!value.defined()) continue;
      described = fmt::format("{} {}", name, value.sizes());
    }
    if (!value.defined() || value.sizes() != expected.sizes()) {
      out.problems.push_back(
          fmt::format("{} does not fit the {}'s {} {}", described, stack, key, expected.sizes()));
      continue;
    }
    out.tensors.emplace(key, value);
  }
}

}  // namespace

const std::vector<MarPublishedModel>& mar_published_models() {
  static const std::vector<MarPublishedModel> models = [] {
    const auto make = [](const char* size, const char* name, int64_t width, int64_t depth,
                         int64_t heads, int64_t diffloss_depth, int64_t diffloss_width, double cfg,
                         int64_t parameters) {
      MarPublishedModel m;
      m.size = size;
      m.reference_name = name;
      MarArchitecture& a = m.architecture;
      a.encoder_width = a.decoder_width = width;
      a.encoder_depth = a.decoder_depth = depth;
      a.encoder_heads = a.decoder_heads = heads;
      a.mlp_hidden = a.decoder_mlp_hidden = 4 * width;
      a.diffloss_depth = diffloss_depth;
      a.diffloss_width = diffloss_width;
      m.cfg = cfg;
      m.reference_parameters = parameters;
      return m;
    };
    return std::vector<MarPublishedModel>{
        make("b", "mar_base", 768, 12, 12, 6, 1024, 2.9, 207'924'768),
        make("l", "mar_large", 1024, 16, 16, 8, 1280, 3.0, 478'326'304),
        make("h", "mar_huge", 1280, 20, 16, 12, 1536, 3.2, 942'403'104)};
  }();
  return models;
}

MarArchitecture mar_architecture(const std::map<std::string, at::Tensor>& sd,
                                 const std::map<std::string, std::string>& metadata) {
  using compat_detail::check_metadata_integer;
  MarArchitecture a;
  const auto z_proj = shape_of(sd, "z_proj.weight");
  a.encoder_width = z_proj[0];
  a.token_channels = z_proj[1];
  a.encoder_depth = count_blocks(sd, "encoder");
  a.mlp_hidden = shape_of(sd, "encoder_blocks.0.mlp.fc1.weight")[0];
  const auto decoder_embed = shape_of(sd, "decoder_embed.weight");
  a.decoder_width = decoder_embed[0];
  TESSERA_CHECK(decoder_embed[1] == a.encoder_width,
                "MAR transformer: decoder_embed.weight takes {} channels but the encoder is {} "
                "wide",
                decoder_embed[1], a.encoder_width);
  a.decoder_depth = count_blocks(sd, "decoder");
  a.decoder_mlp_hidden = shape_of(sd, "decoder_blocks.0.mlp.fc1.weight")[0];
  const int64_t seq_len = shape_of(sd, "diffusion_pos_embed_learned")[1];
  a.grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(seq_len))));
  TESSERA_CHECK(a.grid * a.grid == seq_len,
                "MAR transformer: diffusion_pos_embed_learned has {} positions, not a square "
                "token map",
                seq_len);
  a.buffer_size = shape_of(sd, "encoder_pos_embed_learned")[1] - seq_len;
  TESSERA_CHECK(a.buffer_size >= 1,
                "MAR transformer: encoder_pos_embed_learned has {} positions for {} tokens; MAR "
                "needs a buffer of at least 1",
                a.buffer_size + seq_len, seq_len);
  a.num_classes = shape_of(sd, "class_emb.weight")[0];
  const DiffusionHeadConfig head = mar_diffloss_config(sd);
  a.diffloss_width = head.mlp.width;
  a.diffloss_depth = head.mlp.depth;
  TESSERA_CHECK(
      head.mlp.hidden_width == a.decoder_width && head.mlp.token_channels == a.token_channels,
      "MAR transformer: the DiffLoss conditions on {} channels and denoises {}; the "
      "decoder is {} wide and the tokens have {} channels",
      head.mlp.hidden_width, head.mlp.token_channels, a.decoder_width, a.token_channels);
  a.norm_eps = metadata.contains("mar.norm_eps")
                   ? compat_detail::metadata_number(metadata, "mar.norm_eps", kSource)
                   : 1e-6;

  // Head counts are not in the shapes.
  const MarPublishedModel* published = nullptr;
  for (const MarPublishedModel& m : mar_published_models()) {
    const MarArchitecture& p = m.architecture;
    if (p.encoder_width == a.encoder_width && p.encoder_depth == a.encoder_depth &&
        p.decoder_width == a.decoder_width && p.decoder_depth == a.decoder_depth) {
      published = &m;
    }
  }
  const auto heads = [&](const char* key, int64_t published_heads) {
    if (metadata.contains(key)) return compat_detail::metadata_integer(metadata, key, kSource);
    TESSERA_CHECK(published != nullptr,
                  "MAR transformer: encoder {} wide with {} blocks and decoder {} wide with {} "
                  "blocks is none of mar_base, mar_large, mar_huge; give the head counts as "
                  "metadata (tools/convert_checkpoint.py --metadata mar.encoder_num_heads=… "
                  "mar.decoder_num_heads=…)",
                  a.encoder_width, a.encoder_depth, a.decoder_width, a.decoder_depth);
    return published_heads;
  };
  a.encoder_heads =
      heads("mar.encoder_num_heads", published ? published->architecture.encoder_heads : 0);
  a.decoder_heads =
      heads("mar.decoder_num_heads", published ? published->architecture.decoder_heads : 0);
  TESSERA_CHECK(a.encoder_heads > 0 && a.encoder_width % a.encoder_heads == 0 &&
                    a.decoder_heads > 0 && a.decoder_width % a.decoder_heads == 0,
                "MAR transformer: {} heads do not divide the encoder's width {}, or {} the "
                "decoder's {}",
                a.encoder_heads, a.encoder_width, a.decoder_heads, a.decoder_width);

  const auto check = [&](const char* key, int64_t actual) {
    check_metadata_integer(metadata, key, actual, kSource);
  };
  check("mar.encoder_embed_dim", a.encoder_width);
  check("mar.encoder_depth", a.encoder_depth);
  check("mar.decoder_embed_dim", a.decoder_width);
  check("mar.decoder_depth", a.decoder_depth);
  check("mar.token_embed_dim", a.token_channels);
  check("mar.seq_h", a.grid);
  check("mar.seq_len", seq_len);
  check("mar.buffer_size", a.buffer_size);
  check("mar.class_num", a.num_classes);
  check("mar.diffloss_w", a.diffloss_width);
  check("mar.diffloss_d", a.diffloss_depth);
  check("mar.patch_size", 1);
  return a;
}

KlVaeConfig mar_kl16_config() {
  KlVaeConfig config;
  ConvAutoencoderConfig& ae = config.autoencoder;
  ae.image_channels = 3;
  ae.base_channels = 128;
  ae.channel_multipliers = {1, 1, 2, 2, 4};
  ae.res_blocks_per_level = 2;
  ae.lowest_level_attention = true;
  ae.decoder_lowest_level_attention = false;
  ae.middle_attention = true;
  ae.latent_channels = 16;
  ae.norm_groups = 32;
  ae.norm_eps = 1e-6;
  ae.dropout = 0.0;
  config.token_channels = 16;
  config.latent_scale = 0.2325;
  config.validate();
  return config;
}

GenerationOptions mar_default_sampling(double cfg) {
  GenerationOptions options;
  options.guidance = mar_guidance(cfg, /*linear=*/true);
  options.head.temperature = 1.0;
  options.head.diffusion.steps = 100;
  return options;
}

void apply_mar_sampling_metadata(const std::map<std::string, std::string>& metadata,
                                 GeneratorConfig& generator) {
  using compat_detail::metadata_integer;
  using compat_detail::metadata_number;
  constexpr std::string_view source = "MAR sampling metadata";
  GenerationOptions& options = generator.sampling;
  if (metadata.contains("sample.cfg") || metadata.contains("sample.cfg_schedule")) {
    const double cfg = metadata.contains("sample.cfg")
                           ? metadata_number(metadata, "sample.cfg", source)
                           : options.guidance.scale;
    const std::string schedule = metadata.contains("sample.cfg_schedule")
                                     ? metadata.at("sample.cfg_schedule")
                                     : std::string("linear");
    TESSERA_CHECK(schedule == "linear" || schedule == "constant",
                  "{}: sample.cfg_schedule is '{}'; MAR's are 'linear' and 'constant'", source,
                  schedule);
    options.guidance = mar_guidance(cfg, schedule == "linear");
  }
  if (metadata.contains("sample.temperature")) {
    options.head.temperature = metadata_number(metadata, "sample.temperature", source);
  }
  if (metadata.contains("mar.num_sampling_steps")) {
    options.head.diffusion.steps = metadata_integer(metadata, "mar.num_sampling_steps", source);
  }
  if (metadata.contains("sample.num_iter")) {
    generator.schedule.mar.sampling.steps = metadata_integer(metadata, "sample.num_iter", source);
  }
  options.head.validate();
}

GeneratorPreset mar_generator_preset(const MarArchitecture& a, const KlVaeConfig& tokenizer) {
  TESSERA_CHECK(tokenizer.token_channels == a.token_channels,
                "MAR preset: the tokenizer has {} token channels, the model {}",
                tokenizer.token_channels, a.token_channels);
  GeneratorPreset p;
  p.family = PresetFamily::mar;
  p.tokenizer.kind = TokenizerKind::kl_vae;
  p.tokenizer.kl_vae = tokenizer;
  GeneratorConfig& g = p.generator;
  const int64_t L = a.grid * a.grid;
  g.backbone = mar_style_config(a.encoder_width, a.encoder_depth, a.encoder_heads, L,
                                a.token_channels, a.num_classes, a.buffer_size);
  g.backbone.mlp_hidden = a.mlp_hidden;
  g.backbone.norm_eps = a.norm_eps;
  g.backbone.input_norm = true;  // z_proj_ln
  g.backbone.validate();
  BackboneConfig decoder = mar_decoder_config(a.decoder_width, a.decoder_depth, a.decoder_heads, L,
                                              a.encoder_width, a.buffer_size);
  decoder.mlp_hidden = a.decoder_mlp_hidden;
  decoder.norm_eps = a.norm_eps;
  decoder.output_positions = true;  // diffusion_pos_embed_learned
  decoder.validate();
  g.decoder = decoder;
  g.head.kind = HeadKind::diffusion;
  g.head.diffusion = mar_diffloss_head_config(a.token_channels, a.decoder_width, a.diffloss_width,
                                              a.diffloss_depth);
  g.schedule.kind = ScheduleKind::mar;
  MarScheduleConfig schedule;
  schedule.buffer_size = a.buffer_size;
  schedule.encoder_decoder = true;
  schedule.sampling.steps = 64;
  schedule.sampling.curve = MaskingCurve::cosine;
  g.schedule.mar = schedule;
  g.sampling = mar_default_sampling(2.9);
  g.image_size = a.grid * tokenizer.autoencoder.downsampling_factor();
  g.image_channels = tokenizer.autoencoder.image_channels;
  return p;
}

void load_mar_transformer(Generator& generator,
                          const std::map<std::string, at::Tensor>& state_dict) {
  auto* head = dynamic_cast<DiffusionHead*>(&generator.head());
  TESSERA_CHECK(head != nullptr && generator.decoder() != nullptr &&
                    generator.backbone().config().input_norm &&
                    generator.decoder()->config().output_positions,
                "MAR transformer: the generator is not a MAR one (encoder with input_norm, decoder "
                "with output_positions, diffusion head); build it from a mar preset");
  StackTensors encoder, decoder;
  collect_stack(generator.backbone(), "encoder", state_dict, encoder);
  collect_stack(*generator.decoder(), "decoder", state_dict, decoder);
  std::vector<std::string> problems = encoder.problems;
  problems.insert(problems.end(), decoder.problems.begin(), decoder.problems.end());
  std::map<std::string, at::Tensor> head_tensors;
  const std::map<std::string, at::Tensor> expected_head = head->state_dict();
  for (const auto& [key, tensor] : state_dict) {
    if (key.starts_with("diffloss.")) {
      const std::string name = key.substr(9);
      const auto it = expected_head.find(name);
      if (it == expected_head.end()) {
        problems.push_back(fmt::format("unexpected {}", key));
      } else if (it->second.sizes() != tensor.sizes()) {
        problems.push_back(
            fmt::format("{} is {}, the head's is {}", key, tensor.sizes(), it->second.sizes()));
      } else {
        head_tensors.emplace(name, tensor);
      }
    } else if (!encoder.used.contains(key) && !decoder.used.contains(key)) {
      problems.push_back(fmt::format("unexpected {}", key));
    }
  }
  for (const auto& [name, tensor] : expected_head) {
    if (!head_tensors.contains(name) && !state_dict.contains("diffloss." + name)) {
      problems.push_back(fmt::format("missing diffloss.{}", name));
    }
  }
  TESSERA_CHECK(problems.empty(), "MAR transformer (MAR's names): {}", fmt::join(problems, "; "));
  // Everything was checked above; the strict loads copy.
  for (auto [backbone, tensors] : {std::pair{&generator.backbone(), &encoder.tensors},
                                   std::pair{generator.decoder(), &decoder.tensors}}) {
    const StateDictLoadReport report = backbone->load_state_dict(*tensors, {.strict = true});
    TESSERA_CHECK(report.complete(), "MAR transformer: {}", report.summary());
  }
  head->load_state_dict(head_tensors);
}

}  // namespace tessera
