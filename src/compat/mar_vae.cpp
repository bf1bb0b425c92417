#include "tessera/compat/mar_vae.h"

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

constexpr std::string_view kSource = "MAR VAE metadata";

at::IntArrayRef shape_of(const std::map<std::string, at::Tensor>& state_dict,
                         const std::string& key) {
  return compat_detail::reference_tensor_shape(state_dict, key, "MAR VAE",
                                               "an AutoencoderKL state dict");
}

}  // namespace

KlVaeConfig mar_vae_config(const std::map<std::string, at::Tensor>& sd,
                           const std::map<std::string, std::string>& metadata) {
  KlVaeConfig config;
  ConvAutoencoderConfig& ae = config.autoencoder;
  const auto conv_in = shape_of(sd, "encoder.conv_in.weight");
  ae.image_channels = conv_in[1];
  ae.base_channels = conv_in[0];
  int64_t levels = 0;
  while (sd.contains(fmt::format("encoder.down.{}.block.0.conv1.weight", levels))) ++levels;
  TESSERA_CHECK(levels > 0, "MAR VAE: no encoder.down.0.block.0 tensors");
  ae.channel_multipliers.clear();
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t channels =
        shape_of(sd, fmt::format("encoder.down.{}.block.0.conv1.weight", level))[0];
    TESSERA_CHECK(channels % ae.base_channels == 0,
                  "MAR VAE: level {} has {} channels, not a multiple of ch = {}", level, channels,
                  ae.base_channels);
    ae.channel_multipliers.push_back(channels / ae.base_channels);
  }
  int64_t blocks = 0;
  while (sd.contains(fmt::format("encoder.down.0.block.{}.conv1.weight", blocks))) ++blocks;
  ae.res_blocks_per_level = blocks;
  ae.lowest_level_attention =
      sd.contains(fmt::format("encoder.down.{}.attn.0.q.weight", levels - 1));
  ae.decoder_lowest_level_attention =
      sd.contains(fmt::format("decoder.up.{}.attn.0.q.weight", levels - 1));
  ae.middle_attention = sd.contains("encoder.mid.attn_1.q.weight");
  const auto conv_out = shape_of(sd, "encoder.conv_out.weight");
  TESSERA_CHECK(conv_out[0] % 2 == 0,
                "MAR VAE: encoder.conv_out has {} outputs; a KL autoencoder emits mean and "
                "log-variance (double_z)",
                conv_out[0]);
  ae.latent_channels = conv_out[0] / 2;
  ae.norm_groups = compat_detail::metadata_integer_or(metadata, "vae.num_groups", 32, kSource);
  ae.norm_eps = metadata.contains("vae.norm_eps")
                    ? compat_detail::metadata_number(metadata, "vae.norm_eps", kSource)
                    : 1e-6;
  ae.dropout = 0.0;
  config.token_channels = shape_of(sd, "post_quant_conv.weight")[1];
  config.latent_scale = metadata.contains("vae.scale_factor")
                            ? compat_detail::metadata_number(metadata, "vae.scale_factor", kSource)
                            : kMarVaeScale;

  const auto check_integer = [&](const char* key, int64_t actual) {
    compat_detail::check_metadata_integer(metadata, key, actual, kSource);
  };
  check_integer("vae.ch", ae.base_channels);
  check_integer("vae.num_res_blocks", blocks);
  check_integer("vae.z_channels", ae.latent_channels);
  check_integer("vae.embed_dim", config.token_channels);
  check_integer("vae.in_channels", ae.image_channels);
  check_integer("vae.downsample", ae.downsampling_factor());
  if (const auto it = metadata.find("vae.use_variational"); it != metadata.end()) {
    TESSERA_CHECK(compat_detail::metadata_bool(metadata, "vae.use_variational", true, kSource),
                  "{}: vae.use_variational is {}; Tessera runs MAR's variational KL-16", kSource,
                  it->second);
  }
  ae.validate();
  config.validate();
  return config;
}

void load_mar_vae(KlVae& vae, const std::map<std::string, at::Tensor>& sd) {
  vae.load_state_dict(compat_detail::from_separate_qkv_state(
      vae.state_dict(), sd,
      {.reference_name =
           [](std::string key) {
             // Tessera's names are MAR's but for the fused attention projection.
             const size_t at = key.find(".qkv.");
             return at == std::string::npos ? key : key.substr(0, at) + ".q." + key.substr(at + 5);
           },
       .skipped = [](const std::string& name) { return name.starts_with("loss."); }},
      "MAR VAE (MAR's names)"));
}

std::unique_ptr<KlVae> load_mar_vae(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const std::map<std::string, at::Tensor> sd = file.all();
  auto vae = std::make_unique<KlVae>(mar_vae_config(sd, file.metadata()));
  load_mar_vae(*vae, sd);
  vae->set_training(false);
  return vae;
}

}  // namespace tessera
