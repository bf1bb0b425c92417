// The single-scale VQ-VAE, strict state-dict loading, and tokenizer checkpoints.

#include "tessera/tokenizer/vq_vae.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/temporary_folder.h"
#include "tessera/core/error.h"
#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

VqVaeConfig tiny_config() {
  VqVaeConfig config;
  auto& ae = config.autoencoder;
  ae.image_channels = 1;
  ae.base_channels = 8;
  ae.channel_multipliers = {1, 2, 2};
  ae.res_blocks_per_level = 1;
  ae.lowest_level_attention = false;
  ae.middle_attention = true;
  ae.latent_channels = 8;
  ae.norm_groups = 4;
  config.quantizer.codebook_size = 32;
  config.quantizer.code_dim = 4;
  return config;
}

std::string error_message(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

using TemporaryDirectory = tessera::testing::TemporaryFolder;

TEST(VqVae, EncodesOneGridOfIdsAndDecodesToImageRange) {
  VqVae model(tiny_config(), /*seed=*/1);
  const at::Tensor images = at::rand({3, 1, 16, 12}) * 2 - 1;
  const Tokens tokens = model.encode(images);
  ASSERT_EQ(tokens.num_scales(), 1);
  EXPECT_TRUE(tokens.discrete());
  EXPECT_EQ(tokens.grids[0], (TokenGridSize{4, 3}));
  EXPECT_EQ(tokens.scales[0].sizes(), (at::IntArrayRef{3, 12}));
  EXPECT_GE(tokens.scales[0].min().item<int64_t>(), 0);
  EXPECT_LT(tokens.scales[0].max().item<int64_t>(), 32);
  const at::Tensor decoded = model.decode(tokens);
  EXPECT_EQ(decoded.sizes(), images.sizes());
  EXPECT_LE(decoded.abs().max().item<float>(), 1.0f);
  // The ids are the nearest codes of the latent (checked by brute force).
  const at::Tensor z = model.encode_latent(images).detach();
  const at::Tensor vectors = z.permute({0, 2, 3, 1}).reshape({-1, 4});
  const at::Tensor brute =
      at::cdist(vectors.unsqueeze(0), model.codebook().unsqueeze(0)).squeeze(0).argmin(1);
  EXPECT_TRUE(at::equal(brute.view({3, 12}), tokens.scales[0]));
}

TEST(VqVae, InitialWeightsDependOnTheSeedOnly) {
  const auto first = VqVae(tiny_config(), /*seed=*/3).state_dict();
  (void)at::randn({1000});  // draws from LibTorch's global generator must not matter
  const auto second = VqVae(tiny_config(), /*seed=*/3).state_dict();
  for (const auto& [name, tensor] : first) EXPECT_TRUE(at::equal(second.at(name), tensor)) << name;
  const auto other = VqVae(tiny_config(), /*seed=*/4).state_dict();
  EXPECT_FALSE(at::equal(other.at("encoder.conv_in.weight"), first.at("encoder.conv_in.weight")));
  EXPECT_FALSE(
      at::equal(other.at("quantize.embedding.weight"), first.at("quantize.embedding.weight")));
  // nn.Conv2d's initialisation: U(±1/√fan_in) for weights and biases (fan_in 1·3·3 here).
  const at::Tensor conv_in = first.at("encoder.conv_in.weight");
  EXPECT_LE(conv_in.abs().max().item<double>(), 1.0 / 3.0);
  EXPECT_GT(conv_in.abs().max().item<double>(), 0.8 / 3.0);
}

TEST(VqVae, BadInputIsAClearError) {
  VqVae model(tiny_config());
  EXPECT_NE(error_message([&] {
              (void)model.encode(at::zeros({1, 1, 30, 32}));
            }).find("30x32 is not divisible by the downsampling factor 4"),
            std::string::npos);
  Tokens tokens{{at::full({1, 4}, 32, at::kLong)}, {{2, 2}}};
  EXPECT_NE(error_message([&] { (void)model.decode(tokens); }).find("outside the codebook [0, 32)"),
            std::string::npos);
  Tokens mismatched{{at::zeros({1, 5}, at::kLong)}, {{2, 2}}};
  EXPECT_NE(error_message([&] { (void)model.decode(mismatched); }).find("grid needs 4"),
            std::string::npos);
  VqVaeConfig bad = tiny_config();
  bad.autoencoder.channel_multipliers = {1, 3};  // 24 channels into 4 groups is fine ...
  bad.autoencoder.norm_groups = 16;              // ... into 16 groups it is not
  EXPECT_NE(error_message([&] { VqVae m(bad); }).find("GroupNorm cannot split 8 channels"),
            std::string::npos);
}

TEST(VqVae, LoadStateDictIsStrict) {
  VqVae model(tiny_config());
  auto state = model.state_dict();
  auto missing = state;
  missing.erase("decoder.conv_out.bias");
  EXPECT_NE(error_message([&] {
              model.load_state_dict(missing);
            }).find("missing keys: decoder.conv_out.bias"),
            std::string::npos);
  auto extra = state;
  extra["decoder.conv_out.scale"] = at::ones({1});
  EXPECT_NE(error_message([&] {
              model.load_state_dict(extra);
            }).find("unexpected keys: decoder.conv_out.scale"),
            std::string::npos);
  auto wrong_shape = state;
  wrong_shape["quantize.embedding.weight"] = at::zeros({31, 4});
  EXPECT_NE(error_message([&] {
              model.load_state_dict(wrong_shape);
            }).find("quantize.embedding.weight (expected [32, 4], got [31, 4])"),
            std::string::npos);
}

TEST(TokenizerCheckpoint, RoundTripRestoresConfigAndWeights) {
  TemporaryDirectory dir;
  VqVae model(tiny_config(), /*seed=*/7);
  const auto path = dir.path() / "tokenizer.safetensors";
  save_tokenizer_checkpoint(path, model, {{"tessera.step", "12"}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata().at("tessera.step"), "12");
  const auto loaded = load_tokenizer_checkpoint(path);
  EXPECT_EQ(loaded->config().kind, TokenizerKind::vq_vae);
  EXPECT_EQ(config_to_json(loaded->config()), config_to_json(model.config()));
  const auto original_state = model.state_dict();
  const auto loaded_state = loaded->state_dict();
  ASSERT_EQ(loaded_state.size(), original_state.size());
  for (const auto& [name, tensor] : original_state) {
    EXPECT_TRUE(at::equal(loaded_state.at(name), tensor)) << name;
  }
  // A different seed gives different weights, so the equality above is not vacuous.
  EXPECT_FALSE(at::equal(VqVae(tiny_config(), 8).state_dict().at("encoder.conv_in.weight"),
                         original_state.at("encoder.conv_in.weight")));
}

TEST(TokenizerCheckpoint, FileWithoutConfigIsRejected) {
  TemporaryDirectory dir;
  const auto path = dir.path() / "plain.safetensors";
  save_safetensors(path, {{"x", at::zeros({2})}});
  EXPECT_NE(error_message([&] {
              (void)load_tokenizer_checkpoint(path);
            }).find("not a Tessera tokenizer checkpoint"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
