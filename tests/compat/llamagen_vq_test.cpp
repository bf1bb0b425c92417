// LlamaGen's VQ tokenizer (VQModel, tokenizer/tokenizer_image/vq_model.py) against the reference
// fixture (../shared/parity/llamagen-tiny, or $TESSERA_PARITY_LLAMAGEN_DIR; README-llamagen.md
// there), made by LlamaGen's own code at commit ce98ec4: the architecture from the file, the
// tensors by LlamaGen's names, codes exact and pre_quant / quant / recon within 1e-4 relative.

#include "tessera/compat/llamagen_vq.h"

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
#include "common/relative_error.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

using testing::llamagen_parity_dir;

#define SKIP_WITHOUT_LLAMAGEN_FIXTURE() \
  TESSERA_SKIP_WITHOUT_LLAMAGEN_FIXTURE("tokenizer.safetensors", "io.safetensors")

using testing::relative_error;

// The sizes come from the tensors and agree with what the file's metadata records; every
// reference parameter is used (the parameter counts are equal; codebook_used is a buffer).
TEST(LlamagenVq, ArchitectureComesFromTheFile) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile file =
      SafetensorsFile::open(llamagen_parity_dir() / "tokenizer.safetensors");
  const auto& metadata = file.metadata();
  const VqVaeConfig c = llamagen_vq_config(file.all(), metadata);
  EXPECT_EQ(c.autoencoder.base_channels, std::stoll(metadata.at("vq.ch")));
  EXPECT_EQ(c.autoencoder.channel_multipliers,
            testing::metadata_integers(metadata.at("vq.encoder_ch_mult")));
  EXPECT_EQ(c.autoencoder.res_blocks_per_level, std::stoll(metadata.at("vq.num_res_blocks")));
  EXPECT_EQ(c.autoencoder.latent_channels, std::stoll(metadata.at("vq.z_channels")));
  EXPECT_EQ(c.autoencoder.downsampling_factor(), std::stoll(metadata.at("downsample")));
  EXPECT_EQ(c.quantizer.codebook_size, std::stoll(metadata.at("vq.codebook_size")));
  EXPECT_EQ(c.quantizer.code_dim, std::stoll(metadata.at("vq.codebook_embed_dim")));
  EXPECT_TRUE(c.quantizer.l2_normalized_codes);

  int64_t reference = 0;
  for (const auto& [name, tensor] : file.all()) {
    if (name != "quantize.codebook_used") reference += tensor.numel();
  }
  const std::unique_ptr<VqVae> vq =
      load_llamagen_vq(llamagen_parity_dir() / "tokenizer.safetensors");
  int64_t ours = 0;
  for (const auto& p : vq->parameters()) ours += p.numel();
  EXPECT_EQ(ours, reference);
}

// VQModel.encode: quant_conv(encoder(image)) is pre_quant; the ids are the nearest unit codebook
// rows (exact: the fixture's smallest distance gap is 1.4e-3); quant is those rows.
TEST(LlamagenVq, EncodeMatchesTheReference) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  const std::unique_ptr<VqVae> vq =
      load_llamagen_vq(llamagen_parity_dir() / "tokenizer.safetensors");
  at::NoGradGuard no_grad;
  const at::Tensor image = io.tensor("image");

  const at::Tensor pre_quant = vq->encode_latent(image);
  ASSERT_EQ(pre_quant.sizes(), io.tensor("pre_quant").sizes());
  const double pre_quant_error = relative_error(pre_quant, io.tensor("pre_quant"));

  const Tokens tokens = vq->encode(image);
  const at::Tensor codes = io.tensor("codes").to(at::kLong);
  ASSERT_EQ(tokens.scales.size(), 1u);
  ASSERT_EQ(tokens.scales[0].sizes(), codes.sizes());
  EXPECT_TRUE(at::equal(tokens.scales[0], codes));

  const at::Tensor quant_ref = io.tensor("quant");
  const at::Tensor quant = vq->codebook()
                               .index_select(0, codes.flatten())
                               .view({quant_ref.size(0), quant_ref.size(2), quant_ref.size(3), -1})
                               .permute({0, 3, 1, 2});
  const double quant_error = relative_error(quant, quant_ref);
  std::printf("LlamaGen VQ: pre_quant %.3g, quant %.3g relative error\n", pre_quant_error,
              quant_error);
  EXPECT_LT(pre_quant_error, 1e-4);
  EXPECT_LT(quant_error, 1e-4);
}

// VQModel.decode_code(codes, shape): the unit codebook rows through post_quant_conv and the
// decoder (recon, unclamped); decode() of the same ids is that image clamped to [-1, 1].
TEST(LlamagenVq, DecodeMatchesTheReference) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  const std::unique_ptr<VqVae> vq =
      load_llamagen_vq(llamagen_parity_dir() / "tokenizer.safetensors");
  at::NoGradGuard no_grad;
  const at::Tensor codes = io.tensor("codes").to(at::kLong);
  const at::Tensor quant_ref = io.tensor("quant");
  const at::Tensor recon_ref = io.tensor("recon");

  const at::Tensor recon = vq->decode_latent(quant_ref);
  ASSERT_EQ(recon.sizes(), recon_ref.sizes());
  const double recon_error = relative_error(recon, recon_ref);

  Tokens tokens;
  tokens.scales = {codes};
  tokens.grids = {{quant_ref.size(2), quant_ref.size(3)}};
  const double image_error = relative_error(vq->decode(tokens), recon_ref.clamp(-1, 1));
  std::printf("LlamaGen VQ: recon %.3g, clamped decode %.3g relative error\n", recon_error,
              image_error);
  EXPECT_LT(recon_error, 1e-4);
  EXPECT_LT(image_error, 1e-4);
}

// A state dict that does not fit names the key as LlamaGen names it and changes nothing.
TEST(LlamagenVq, AWrongStateDictIsAnErrorNamingTheKey) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile file =
      SafetensorsFile::open(llamagen_parity_dir() / "tokenizer.safetensors");
  VqVae vq(llamagen_vq_config(file.all(), file.metadata()), 0);
  const at::Tensor before = vq.state_dict().at("decoder.conv_out.weight").clone();

  std::map<std::string, at::Tensor> missing = file.all();
  missing.erase("decoder.conv_blocks.0.attn.1.k.weight");
  testing::expect_error([&] { load_llamagen_vq(vq, missing); },
                        {"missing decoder.conv_blocks.0.attn.1.k.weight"});

  std::map<std::string, at::Tensor> misshapen = file.all();
  misshapen["encoder.mid.1.proj_out.bias"] = at::zeros({3});
  misshapen["extra.weight"] = at::zeros({1});
  testing::expect_error([&] { load_llamagen_vq(vq, misshapen); },
                        {"encoder.mid.1.proj_out.bias has shape", "unexpected extra.weight"});
  EXPECT_TRUE(at::equal(vq.state_dict().at("decoder.conv_out.weight"), before));

  std::map<std::string, std::string> metadata = file.metadata();
  metadata["vq.z_channels"] = "48";
  testing::expect_error([&] { llamagen_vq_config(file.all(), metadata); }, {"vq.z_channels is 48"});
}

}  // namespace
}  // namespace tessera
