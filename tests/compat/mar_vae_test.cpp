// MAR's KL-16 tokenizer (AutoencoderKL, models/vae.py) against the reference fixture
// (../shared/parity/mar-tiny, or $TESSERA_PARITY_MAR_DIR; README-mar.md there), made by MAR's own
// code at commit fe470ac: the architecture from the file, the tensors by MAR's names, moments,
// the scaled posterior mean, the patchified tokens and the reconstruction within 1e-4 relative.

#include "tessera/compat/mar_vae.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "common/reference_key_list.h"
#include "common/relative_error.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

using testing::mar_parity_dir;

#define SKIP_WITHOUT_MAR_FIXTURE() \
  TESSERA_SKIP_WITHOUT_MAR_FIXTURE("vae.safetensors", "io.safetensors")

using testing::relative_error;

// The sizes come from the tensors and agree with the metadata; attention sits in the encoder's
// lowest level and the middles, not in the decoder's levels; every reference tensor is used.
TEST(MarVae, ArchitectureComesFromTheFile) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile file = SafetensorsFile::open(mar_parity_dir() / "vae.safetensors");
  const auto& m = file.metadata();
  const KlVaeConfig c = mar_vae_config(file.all(), m);
  EXPECT_EQ(c.autoencoder.base_channels, std::stoll(m.at("vae.ch")));
  EXPECT_EQ(c.autoencoder.channel_multipliers, testing::metadata_integers(m.at("vae.ch_mult")));
  EXPECT_EQ(c.autoencoder.res_blocks_per_level, std::stoll(m.at("vae.num_res_blocks")));
  EXPECT_EQ(c.autoencoder.latent_channels, std::stoll(m.at("vae.z_channels")));
  EXPECT_EQ(c.token_channels, std::stoll(m.at("vae.embed_dim")));
  EXPECT_EQ(c.autoencoder.downsampling_factor(), std::stoll(m.at("vae.downsample")));
  EXPECT_DOUBLE_EQ(c.latent_scale, std::stod(m.at("vae.scale_factor")));
  EXPECT_TRUE(c.autoencoder.lowest_level_attention);
  EXPECT_EQ(c.autoencoder.decoder_lowest_level_attention, std::optional<bool>(false));
  EXPECT_EQ(m.at("vae.decoder_attn_resolutions"), "");

  int64_t reference = 0;
  for (const auto& [name, tensor] : file.all()) reference += tensor.numel();
  const std::unique_ptr<KlVae> vae = load_mar_vae(mar_parity_dir() / "vae.safetensors");
  int64_t ours = 0;
  for (const auto& p : vae->parameters()) ours += p.numel();
  EXPECT_EQ(ours, reference);
}

// quant_conv(encoder(image)) is the moments (mean, then the log-variance, which the fixture keeps
// inside the [-30, 20] clamp); the tokens are the mean × 0.2325, patchified as MAR's patchify
// with patch size 1: tokens[b, h·w_side + w, c] = latent[b, c, h, w].
TEST(MarVae, EncodeMatchesTheReference) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  const std::unique_ptr<KlVae> vae = load_mar_vae(mar_parity_dir() / "vae.safetensors");
  const at::Tensor image = io.tensor("image");
  const DiagonalGaussian posterior = vae->encode_posterior(image);
  const double moments_error =
      relative_error(at::cat({posterior.mean, posterior.log_variance}, 1), io.tensor("moments"));
  const at::Tensor latent = io.tensor("latent");
  const double latent_error =
      relative_error(posterior.mean * vae->kl_vae_config().latent_scale, latent);
  const Tokens tokens = vae->encode(image);
  const at::Tensor tokens_ref = io.tensor("tokens");
  ASSERT_EQ(tokens.scales[0].sizes(), tokens_ref.sizes());
  const double tokens_error = relative_error(tokens.scales[0], tokens_ref);
  std::printf("MAR VAE: moments %.3g, latent %.3g, tokens %.3g relative error\n", moments_error,
              latent_error, tokens_error);
  EXPECT_LT(moments_error, 1e-4);
  EXPECT_LT(latent_error, 1e-4);
  EXPECT_LT(tokens_error, 1e-4);
}

// vae.decode(latent / 0.2325), unclamped; decode() of the tokens is that image clamped.
TEST(MarVae, DecodeMatchesTheReference) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  const std::unique_ptr<KlVae> vae = load_mar_vae(mar_parity_dir() / "vae.safetensors");
  const at::Tensor recon_ref = io.tensor("vae_recon");
  const double scale = vae->kl_vae_config().latent_scale;
  const double recon_error =
      relative_error(vae->decode_latent(io.tensor("latent") / scale), recon_ref);
  const at::Tensor latent = io.tensor("latent");
  Tokens tokens;
  tokens.scales = {io.tensor("tokens")};
  tokens.grids = {{latent.size(2), latent.size(3)}};
  const double image_error = relative_error(vae->decode(tokens), recon_ref.clamp(-1, 1));
  std::printf("MAR VAE: vae_recon %.3g, clamped decode %.3g relative error\n", recon_error,
              image_error);
  EXPECT_LT(recon_error, 1e-4);
  EXPECT_LT(image_error, 1e-4);
}

// The published KL-16 (AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)), its key list dumped
// from the reference constructor in tests/compat/data): the architecture its shapes describe, and
// a strict load with the reference module's parameter count.
TEST(MarVae, Kl16KeysLoadIntoTheArchitectureTheyDescribe) {
  const std::map<std::string, at::Tensor> reference =
      testing::reference_key_list("mar_kl16_vae_state_dict.txt");
  ASSERT_EQ(reference.size(), 312u);
  const KlVaeConfig c = mar_vae_config(reference);
  EXPECT_EQ(c.autoencoder.base_channels, 128);
  EXPECT_EQ(c.autoencoder.channel_multipliers, (std::vector<int64_t>{1, 1, 2, 2, 4}));
  EXPECT_EQ(c.autoencoder.res_blocks_per_level, 2);
  EXPECT_EQ(c.autoencoder.latent_channels, 16);
  EXPECT_EQ(c.token_channels, 16);
  EXPECT_EQ(c.autoencoder.downsampling_factor(), 16);
  EXPECT_TRUE(c.autoencoder.lowest_level_attention);
  EXPECT_EQ(c.autoencoder.decoder_lowest_level_attention, std::optional<bool>(false));
  EXPECT_DOUBLE_EQ(c.latent_scale, kMarVaeScale);
  KlVae vae(c, 0);
  load_mar_vae(vae, reference);
  int64_t parameters = 0;
  for (const auto& p : vae.parameters()) parameters += p.numel();
  EXPECT_EQ(parameters, 66'456'019);  // sum(p.numel() for p in AutoencoderKL(16, ...).parameters())
}

// A state dict that does not fit names the key as MAR names it and changes nothing; LDM's loss
// networks, which a checkpoint may carry, are skipped.
TEST(MarVae, AWrongStateDictIsAnErrorNamingTheKey) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile file = SafetensorsFile::open(mar_parity_dir() / "vae.safetensors");
  KlVae vae(mar_vae_config(file.all(), file.metadata()), 0);
  const at::Tensor before = vae.state_dict().at("decoder.conv_out.weight").clone();

  std::map<std::string, at::Tensor> missing = file.all();
  missing.erase("encoder.down.4.attn.1.v.bias");
  testing::expect_error([&] { load_mar_vae(vae, missing); },
                        {"missing encoder.down.4.attn.1.v.bias"});
  std::map<std::string, at::Tensor> misshapen = file.all();
  misshapen["post_quant_conv.bias"] = at::zeros({3});
  misshapen["extra.weight"] = at::zeros({1});
  testing::expect_error([&] { load_mar_vae(vae, misshapen); },
                        {"post_quant_conv.bias has shape", "unexpected extra.weight"});
  EXPECT_TRUE(at::equal(vae.state_dict().at("decoder.conv_out.weight"), before));

  std::map<std::string, at::Tensor> with_loss = file.all();
  with_loss["loss.discriminator.main.0.weight"] = at::zeros({4});
  load_mar_vae(vae, with_loss);
  EXPECT_FALSE(at::equal(vae.state_dict().at("decoder.conv_out.weight"), before));
}

}  // namespace
}  // namespace tessera
