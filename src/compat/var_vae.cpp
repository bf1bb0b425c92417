#include "tessera/compat/var_vae.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <sstream>
#include <stdexcept>

#include "tessera/core/error.h"

namespace tessera {

namespace {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& key) {
  std::vector<int64_t> values;
  std::string item;
  std::stringstream stream(text);
  while (std::getline(stream, item, ',')) {
    // Tolerate "(1, 2, 3)" and "[1,2,3]" as well as "1,2,3".
    std::string digits;
    for (char c : item) {
      if (c != ' ' && c != '(' && c != ')' && c != '[' && c != ']') digits += c;
    }
    if (digits.empty()) continue;
    int64_t value = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    TESSERA_CHECK(error == std::errc() && end == digits.data() + digits.size(),
                  "VAR checkpoint metadata '{}': '{}' is not a list of integers", key, text);
    values.push_back(value);
  }
  TESSERA_CHECK(!values.empty(), "VAR checkpoint metadata '{}' is empty", key);
  return values;
}

int64_t parse_int(const std::string& text, const std::string& key) {
  const auto values = parse_int_list(text, key);
  TESSERA_CHECK(values.size() == 1, "VAR checkpoint metadata '{}': expected one integer, got '{}'",
                key, text);
  return values[0];
}

double parse_double(const std::string& text, const std::string& key) {
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    TESSERA_CHECK(used == text.size(), "VAR checkpoint metadata '{}': '{}' is not a number", key,
                  text);
    return value;
  } catch (const std::logic_error&) {
    TESSERA_FAIL("VAR checkpoint metadata '{}': '{}' is not a number", key, text);
  }
}

bool parse_bool(const std::string& text, const std::string& key) {
  if (text == "True" || text == "true" || text == "1") return true;
  if (text == "False" || text == "false" || text == "0") return false;
  TESSERA_FAIL("VAR checkpoint metadata '{}': '{}' is not a boolean (True/False)", key, text);
}

}  // namespace

MultiScaleVqVaeConfig var_vae_config(const SafetensorsFile& file) {
  const auto& metadata = file.metadata();
  const std::string where = file.path().string();
  auto required = [&](const std::string& key) -> const std::string& {
    auto it = metadata.find(key);
    TESSERA_CHECK(it != metadata.end(),
                  "{}: __metadata__ lacks '{}', which a VAR vae checkpoint must carry", where, key);
    return it->second;
  };
  auto optional = [&](const std::string& key) -> const std::string* {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  };
  auto shape = [&](const std::string& name) -> const std::vector<int64_t>& {
    TESSERA_CHECK(file.contains(name), "{}: tensor '{}' is missing (not a VAR vae checkpoint?)",
                  where, name);
    return file.info(name).shape;
  };

  MultiScaleVqVaeConfig config;
  ConvAutoencoderConfig& ae = config.autoencoder;
  MultiScaleQuantizerConfig& q = config.quantizer;
  q.patch_nums = parse_int_list(required("patch_nums"), "patch_nums");
  q.codebook_size = parse_int(required("vocab_size"), "vocab_size");
  ae.latent_channels = parse_int(required("Cvae"), "Cvae");
  ae.base_channels = parse_int(required("ch"), "ch");
  q.phi_count = parse_int(required("share_quant_resi"), "share_quant_resi");
  if (const auto* v = optional("quant_resi")) q.phi_residual_ratio = parse_double(*v, "quant_resi");
  if (const auto* v = optional("using_znorm"))
    q.l2_normalized_codes = parse_bool(*v, "using_znorm");
  if (const auto* v = optional("beta")) q.commitment_weight = parse_double(*v, "beta");
  // The reference's Normalize(): GroupNorm(32 groups, eps 1e-6), fixed in its code.
  ae.norm_groups = 32;
  ae.norm_eps = 1e-6;
  ae.dropout = 0.0;

  // The architecture from the tensors: levels, multipliers, blocks, attention.
  const auto& conv_in = shape("encoder.conv_in.weight");
  TESSERA_CHECK(conv_in.size() == 4, "{}: encoder.conv_in.weight is not a conv weight", where);
  ae.image_channels = conv_in[1];
  TESSERA_CHECK(conv_in[0] == ae.base_channels,
                "{}: metadata says ch={} but encoder.conv_in has {} output channels", where,
                ae.base_channels, conv_in[0]);
  int64_t levels = 0;
  while (file.contains(fmt::format("encoder.down.{}.block.0.conv1.weight", levels))) ++levels;
  TESSERA_CHECK(levels > 0, "{}: no encoder.down.<level>.block.0 tensors", where);
  ae.channel_multipliers.clear();
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t channels = shape(fmt::format("encoder.down.{}.block.0.conv1.weight", level))[0];
    TESSERA_CHECK(channels % ae.base_channels == 0,
                  "{}: level {} has {} channels, not a multiple of ch={}", where, level, channels,
                  ae.base_channels);
    ae.channel_multipliers.push_back(channels / ae.base_channels);
  }
  if (const auto* v = optional("ch_mult")) {
    const auto declared = parse_int_list(*v, "ch_mult");
    TESSERA_CHECK(declared == ae.channel_multipliers,
                  "{}: metadata ch_mult {} disagrees with the tensors' {}", where,
                  fmt::join(declared, ","), fmt::join(ae.channel_multipliers, ","));
  }
  int64_t blocks = 0;
  while (file.contains(fmt::format("encoder.down.0.block.{}.conv1.weight", blocks))) ++blocks;
  ae.res_blocks_per_level = blocks;
  if (const auto* v = optional("num_res_blocks")) {
    TESSERA_CHECK(parse_int(*v, "num_res_blocks") == blocks,
                  "{}: metadata num_res_blocks {} disagrees with the tensors' {}", where, *v,
                  blocks);
  }
  ae.lowest_level_attention =
      file.contains(fmt::format("encoder.down.{}.attn.0.qkv.weight", levels - 1));
  ae.middle_attention = file.contains("encoder.mid.attn_1.qkv.weight");
  const auto& conv_out = shape("encoder.conv_out.weight");
  TESSERA_CHECK(conv_out[0] == ae.latent_channels,
                "{}: metadata says Cvae={} but encoder.conv_out has {} output channels", where,
                ae.latent_channels, conv_out[0]);
  const auto& codebook = shape("quantize.embedding.weight");
  TESSERA_CHECK(
      codebook.size() == 2 && codebook[0] == q.codebook_size && codebook[1] == ae.latent_channels,
      "{}: quantize.embedding.weight is [{}], expected [{}, {}] from vocab_size and Cvae", where,
      fmt::join(codebook, ", "), q.codebook_size, ae.latent_channels);
  config.quant_conv_kernel_size = shape("quant_conv.weight")[2];
  // A checkpoint without any Phi parameters was built with |quant_resi| <= 1e-6 (identity Phis).
  bool has_phi = false;
  for (const auto& name : file.names())
    has_phi = has_phi || name.starts_with("quantize.quant_resi.");
  if (!has_phi) q.phi_residual_ratio = 0.0;

  config.autoencoder.validate();
  config.quantizer.validate();
  config.validate();
  return config;
}

std::unique_ptr<MultiScaleVqVae> load_var_vae(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  auto model = std::make_unique<MultiScaleVqVae>(var_vae_config(file));
  model->load_state_dict(file.all());
  return model;
}

}  // namespace tessera
