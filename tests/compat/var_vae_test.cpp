// VAR's own VQ-VAE checkpoints: the architecture read from a file's metadata and tensor shapes,
// checked against each other, and the whole state dict loaded under the reference's names.

#include "tessera/compat/var_vae.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

TEST(VarVae, ConfigurationIsReadFromMetadataAndShapes) {
  // A checkpoint "made the same way at another size": other levels, widths, blocks, attention,
  // scales and Phi sharing. The metadata holds only the keys the parity fixture carries.
  MultiScaleVqVaeConfig config;
  auto& ae = config.autoencoder;
  ae.image_channels = 1;
  ae.base_channels = 32;
  ae.channel_multipliers = {1, 3};
  ae.res_blocks_per_level = 3;
  ae.lowest_level_attention = false;
  ae.middle_attention = true;
  ae.latent_channels = 5;
  ae.norm_groups = 32;  // the reference's fixed GroupNorm(32)
  config.quantizer.codebook_size = 24;
  config.quantizer.patch_nums = {1, 3, 5};
  config.quantizer.phi_count = 0;
  config.quant_conv_kernel_size = 1;
  const MultiScaleVqVae model(config, /*seed=*/9);
  const auto path = std::filesystem::temp_directory_path() /
                    ("tessera-var-config-test-" + std::to_string(::getpid()) + ".safetensors");
  save_safetensors(path, model.state_dict(),
                   {{"patch_nums", "1,3,5"},
                    {"vocab_size", "24"},
                    {"Cvae", "5"},
                    {"ch", "32"},
                    {"share_quant_resi", "0"}});
  const auto read = var_vae_config(SafetensorsFile::open(path));
  EXPECT_EQ(read.autoencoder.image_channels, 1);
  EXPECT_EQ(read.autoencoder.base_channels, 32);
  EXPECT_EQ(read.autoencoder.channel_multipliers, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(read.autoencoder.res_blocks_per_level, 3);
  EXPECT_FALSE(read.autoencoder.lowest_level_attention);
  EXPECT_TRUE(read.autoencoder.middle_attention);
  EXPECT_EQ(read.autoencoder.latent_channels, 5);
  EXPECT_EQ(read.quantizer.codebook_size, 24);
  EXPECT_EQ(read.quantizer.patch_nums, (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(read.quantizer.phi_count, 0);
  EXPECT_EQ(read.quant_conv_kernel_size, 1);
  // The whole state dict loads under those names.
  const auto loaded = load_var_vae(path);
  EXPECT_TRUE(at::equal(loaded->codebook(), model.codebook()));
  // Metadata that contradicts the tensors is an error.
  save_safetensors(path, model.state_dict(),
                   {{"patch_nums", "1,3,5"},
                    {"vocab_size", "24"},
                    {"Cvae", "6"},
                    {"ch", "32"},
                    {"share_quant_resi", "0"}});
  EXPECT_NE(testing::error_message_of([&] { (void)load_var_vae(path); }).find("Cvae=6"),
            std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tessera
