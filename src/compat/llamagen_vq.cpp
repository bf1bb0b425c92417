#include "tessera/compat/llamagen_vq.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string>
#include <vector>

#include "compat/reference_metadata.h"
#include "compat/separate_qkv_state.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/io/safetensors.h"

namespace tessera {

namespace {

constexpr std::string_view kSource = "LlamaGen VQ metadata";

// A tensor's shape by LlamaGen's name, or an error naming it.
at::IntArrayRef shape_of(const std::map<std::string, at::Tensor>& state_dict,
                         const std::string& key) {
  return compat_detail::reference_tensor_shape(state_dict, key, "LlamaGen VQ model",
                                               "a LlamaGen VQModel state dict");
}

std::vector<int64_t> parse_integer_list(const std::string& text, const std::string& key) {
  std::vector<int64_t> values;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(begin, end - begin);
    std::erase_if(item,
                  [](char c) { return c == ' ' || c == '[' || c == ']' || c == '(' || c == ')'; });
    if (!item.empty()) values.push_back(compat_detail::parse_metadata_integer(item, key, kSource));
    begin = end + 1;
  }
  return values;
}

// Tessera's key (encoder.down.2.block.1.conv1.weight, decoder.up.4.attn.0.qkv.bias,
// encoder.mid.attn_1.norm.weight, ...) under LlamaGen's name; a qkv key names the q convolution
// (the caller derives k and v). Note [LlamaGen's VQModel in Tessera's layout].
std::string llamagen_vq_name(const std::string& key, int64_t levels) {
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t dot = key.find('.', begin);
    parts.push_back(key.substr(begin, dot - begin));
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  const bool coder = parts[0] == "encoder" || parts[0] == "decoder";
  if (coder && parts.size() > 3 && (parts[1] == "down" || parts[1] == "up")) {
    const int64_t level = std::stoll(parts[2]);
    parts[2] = std::to_string(parts[1] == "up" ? levels - 1 - level : level);
    parts[1] = "conv_blocks";
    if (parts[3] == "block") parts[3] = "res";
  } else if (coder && parts.size() > 2 && parts[1] == "mid") {
    parts[2] = parts[2] == "block_1" ? "0" : parts[2] == "attn_1" ? "1" : "2";
  }
  for (auto& part : parts) {
    if (part == "qkv") part = "q";
  }
  return fmt::format("{}", fmt::join(parts, "."));
}

}  // namespace

VqVaeConfig llamagen_vq_preset_config(int64_t codebook_size, int64_t code_dim, int64_t levels) {
  TESSERA_CHECK(levels == 4 || levels == 5, "LlamaGen VQ: VQ_8 has 4 levels and VQ_16 5, got {}",
                levels);
  VqVaeConfig config;
  ConvAutoencoderConfig& ae = config.autoencoder;
  ae.image_channels = 3;
  ae.base_channels = 128;
  ae.channel_multipliers =
      levels == 5 ? std::vector<int64_t>{1, 1, 2, 2, 4} : std::vector<int64_t>{1, 2, 2, 4};
  ae.res_blocks_per_level = 2;
  ae.lowest_level_attention = true;
  ae.middle_attention = true;
  ae.latent_channels = 256;
  ae.norm_groups = 32;
  ae.norm_eps = 1e-6;
  ae.dropout = 0.0;
  config.quantizer.codebook_size = codebook_size;
  config.quantizer.code_dim = code_dim;
  config.quantizer.commitment_weight = 0.25;
  config.quantizer.l2_normalized_codes = true;
  config.quant_conv_kernel_size = 1;
  config.validate();
  return config;
}

VqVaeConfig llamagen_vq_config(const std::map<std::string, at::Tensor>& sd,
                               const std::map<std::string, std::string>& metadata) {
  VqVaeConfig config;
  ConvAutoencoderConfig& ae = config.autoencoder;
  VectorQuantizerConfig& q = config.quantizer;
  const auto conv_in = shape_of(sd, "encoder.conv_in.weight");
  ae.image_channels = conv_in[1];
  ae.base_channels = conv_in[0];
  int64_t levels = 0;
  while (sd.contains(fmt::format("encoder.conv_blocks.{}.res.0.conv1.weight", levels))) ++levels;
  TESSERA_CHECK(levels > 0, "LlamaGen VQ model: no encoder.conv_blocks.0.res.0 tensors");
  ae.channel_multipliers.clear();
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t channels =
        shape_of(sd, fmt::format("encoder.conv_blocks.{}.res.0.conv1.weight", level))[0];
    TESSERA_CHECK(channels % ae.base_channels == 0,
                  "LlamaGen VQ model: level {} has {} channels, not a multiple of ch = {}", level,
                  channels, ae.base_channels);
    ae.channel_multipliers.push_back(channels / ae.base_channels);
  }
  int64_t blocks = 0;
  while (sd.contains(fmt::format("encoder.conv_blocks.0.res.{}.conv1.weight", blocks))) ++blocks;
  ae.res_blocks_per_level = blocks;
  // LlamaGen's Encoder and Decoder always attend after every block of the lowest resolution and
  // in the middle; a file without those tensors fails the load, naming them.
  ae.lowest_level_attention = true;
  ae.middle_attention = true;
  ae.latent_channels = shape_of(sd, "encoder.conv_out.weight")[0];
  ae.norm_groups = compat_detail::metadata_integer_or(metadata, "vq.num_groups", 32, kSource);
  ae.norm_eps = metadata.contains("vq.norm_eps")
                    ? compat_detail::metadata_number(metadata, "vq.norm_eps", kSource)
                    : 1e-6;
  ae.dropout = 0.0;
  const auto codebook = shape_of(sd, "quantize.embedding.weight");
  TESSERA_CHECK(codebook.size() == 2, "LlamaGen VQ model: quantize.embedding.weight is {}",
                codebook);
  q.codebook_size = codebook[0];
  q.code_dim = codebook[1];
  q.l2_normalized_codes =
      compat_detail::metadata_bool(metadata, "vq.codebook_l2_norm", true, kSource);
  if (metadata.contains("vq.commit_loss_beta")) {
    q.commitment_weight = compat_detail::metadata_number(metadata, "vq.commit_loss_beta", kSource);
  }
  config.quant_conv_kernel_size = shape_of(sd, "quant_conv.weight")[2];

  // What the file records must agree with the tensors.
  const auto check_integer = [&](const char* key, int64_t actual) {
    compat_detail::check_metadata_integer(metadata, key, actual, kSource);
  };
  check_integer("vq.ch", ae.base_channels);
  check_integer("vq.num_res_blocks", blocks);
  check_integer("vq.z_channels", ae.latent_channels);
  check_integer("vq.codebook_size", q.codebook_size);
  check_integer("vq.codebook_embed_dim", q.code_dim);
  check_integer("vq.in_channels", ae.image_channels);
  for (const char* key : {"vq.encoder_ch_mult", "vq.decoder_ch_mult"}) {
    if (!metadata.contains(key)) continue;
    const auto recorded = parse_integer_list(metadata.at(key), key);
    TESSERA_CHECK(recorded == ae.channel_multipliers,
                  "{}: {} is {}, but the encoder's tensors say {}; Tessera's decoder mirrors the "
                  "encoder",
                  kSource, key, fmt::join(recorded, ","), fmt::join(ae.channel_multipliers, ","));
  }
  if (const auto it = metadata.find("vq.norm_type"); it != metadata.end()) {
    TESSERA_CHECK(it->second == "group", "{}: vq.norm_type is '{}'; Tessera runs 'group'", kSource,
                  it->second);
  }
  ae.validate();
  q.validate();
  config.validate();
  return config;
}

void load_llamagen_vq(VqVae& vq, const std::map<std::string, at::Tensor>& sd) {
  const int64_t levels =
      static_cast<int64_t>(vq.vq_vae_config().autoencoder.channel_multipliers.size());
  vq.load_state_dict(compat_detail::from_separate_qkv_state(
      vq.state_dict(), sd,
      {.reference_name = [levels](const std::string& key) { return llamagen_vq_name(key, levels); },
       // Tessera's own usage statistic: LlamaGen has none to give.
       .model_only = {"quantize.code_hits_ema"},
       // LlamaGen's training statistic, not loaded.
       .skipped = [](const std::string& name) { return name == "quantize.codebook_used"; }},
      "LlamaGen VQ model (LlamaGen's names)"));
}

std::unique_ptr<VqVae> load_llamagen_vq(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const std::map<std::string, at::Tensor> sd = file.all();
  auto vq = std::make_unique<VqVae>(llamagen_vq_config(sd, file.metadata()));
  load_llamagen_vq(*vq, sd);
  vq->set_training(false);
  return vq;
}

}  // namespace tessera
