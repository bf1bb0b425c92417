// Tokenizer configurations: JSON round trips, validation messages, the shipped configs, and
// building every kind through make_tokenizer.

#include "tessera/tokenizer/tokenizer_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/source_paths.h"
#include "tessera/core/error.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera {
namespace {

std::string error_of(const nlohmann::json& j) {
  try {
    (void)config_from_json<TokenizerConfig>(j, "tokenizer");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerConfig, RoundTripsThroughJson) {
  TokenizerConfig config;
  config.kind = TokenizerKind::multiscale_vq_vae;
  MultiScaleVqVaeConfig ms;
  ms.autoencoder.image_channels = 1;
  ms.quantizer.patch_nums = {1, 2, 4, 8};
  ms.quantizer.phi_count = 0;
  config.multiscale_vq_vae = ms;
  const nlohmann::json j = config_to_json(config);
  const auto back = config_from_json<TokenizerConfig>(j);
  EXPECT_EQ(back.kind, TokenizerKind::multiscale_vq_vae);
  ASSERT_TRUE(back.multiscale_vq_vae.has_value());
  EXPECT_EQ(back.multiscale_vq_vae->quantizer.patch_nums, (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(back.multiscale_vq_vae->quantizer.phi_count, 0);
  EXPECT_EQ(back.multiscale_vq_vae->autoencoder.image_channels, 1);
  EXPECT_EQ(config_to_json(back), j);
}

TEST(TokenizerConfig, AbsentSectionMeansDefaults) {
  const auto config = config_from_json<TokenizerConfig>(nlohmann::json{{"kind", "kl_vae"}});
  EXPECT_FALSE(config.kl_vae.has_value());
  EXPECT_EQ(config.kl_vae_or_default().token_channels, 16);
  EXPECT_DOUBLE_EQ(config.kl_vae_or_default().latent_scale, 0.2325);
}

TEST(TokenizerConfig, RejectsUnknownKeysWithASuggestion) {
  const std::string message =
      error_of({{"kind", "vq_vae"}, {"vq_vae", {{"quantizer", {{"codebok_size", 512}}}}}});
  EXPECT_NE(message.find("codebok_size"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'codebook_size'"), std::string::npos) << message;
}

TEST(TokenizerConfig, RejectsASectionOfAnotherKind) {
  const std::string message = error_of({{"kind", "vq_vae"}, {"kl_vae", nlohmann::json::object()}});
  EXPECT_NE(message.find("section 'kl_vae' is present but kind is 'vq_vae'"), std::string::npos)
      << message;
}

TEST(TokenizerConfig, RejectsBadValues) {
  EXPECT_NE(error_of({{"kind", "vq_vae"},
                      {"vq_vae", {{"autoencoder", {{"base_channels", 48}, {"norm_groups", 32}}}}}})
                .find("GroupNorm cannot split 48 channels"),
            std::string::npos);
  EXPECT_NE(error_of({{"kind", "multiscale_vq_vae"},
                      {"multiscale_vq_vae", {{"quantizer", {{"patch_nums", {1, 2, 2}}}}}}})
                .find("strictly increasing"),
            std::string::npos);
  EXPECT_NE(error_of({{"kind", "transformer"}}).find("unknown value 'transformer'"),
            std::string::npos);
  EXPECT_NE(error_of({{"kind", "patch"}, {"patch", {{"patch_size", 0}}}}).find("patch_size"),
            std::string::npos);
}

TEST(TokenizerConfig, ShippedConfigsLoadAndBuild) {
  const std::filesystem::path dir = tessera::testing::source_dir() / "configs" / "tokenizer";
  ASSERT_TRUE(std::filesystem::exists(dir)) << dir;
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    const auto config = load_config<TokenizerTrainConfig>(entry.path());
    const auto tokenizer = make_tokenizer(config.tokenizer);
    // The configured image size suits the tokenizer.
    EXPECT_NO_THROW((void)tokenizer->token_grids(config.data.image_size, config.data.image_size));
    EXPECT_EQ(tokenizer->image_channels(), config.data.channels);
    ++count;
  }
  EXPECT_GE(count, 3);
}

TEST(TokenizerConfig, MakeTokenizerBuildsEveryKind) {
  for (TokenizerKind kind : {TokenizerKind::vq_vae, TokenizerKind::multiscale_vq_vae,
                             TokenizerKind::kl_vae, TokenizerKind::patch}) {
    TokenizerConfig config;
    config.kind = kind;
    if (kind != TokenizerKind::patch) {
      // Defaults are ImageNet-sized; shrink the autoencoder so the test stays fast.
      ConvAutoencoderConfig ae;
      ae.base_channels = 8;
      ae.channel_multipliers = {1, 1};
      ae.res_blocks_per_level = 1;
      ae.norm_groups = 4;
      ae.latent_channels = 4;
      if (kind == TokenizerKind::vq_vae) config.vq_vae = VqVaeConfig{.autoencoder = ae};
      if (kind == TokenizerKind::multiscale_vq_vae) {
        config.multiscale_vq_vae = MultiScaleVqVaeConfig{.autoencoder = ae};
      }
      if (kind == TokenizerKind::kl_vae) config.kl_vae = KlVaeConfig{.autoencoder = ae};
    }
    const auto tokenizer = make_tokenizer(config);
    EXPECT_EQ(tokenizer->config().kind, kind);
    EXPECT_EQ(tokenizer->discrete(),
              kind == TokenizerKind::vq_vae || kind == TokenizerKind::multiscale_vq_vae);
  }
}

}  // namespace
}  // namespace tessera
