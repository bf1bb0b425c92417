// MAR against the reference fixture (../shared/parity/mar-tiny, or $TESSERA_PARITY_MAR_DIR;
// README-mar.md there): the generator a MAR state dict describes (sizes from its tensors, heads
// and sampling settings from its metadata) loads MAR's names strictly; its MAE encoder and decoder
// give forward_mae_encoder's and forward_mae_decoder's outputs for the saved orders and mask; the
// DiffLoss sampling loop, given x_T and the seeded torch stream, is p_sample_loop's; numpy's
// shuffles are sample_orders'; and sample_tokens under reference seeding gives the reference's
// tokens and image (per-step linear guidance, mask_by_order, MAR's draws in MAR's order).

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "common/relative_error.h"
#include "tessera/compat/mar.h"
#include "tessera/compat/mar_vae.h"
#include "tessera/compat/presets.h"
#include "tessera/core/numpy_random.h"
#include "tessera/core/rng.h"
#include "tessera/io/safetensors.h"
#include "tessera/schedule/mar_schedule.h"
#include "tessera/tokenizer/kl_vae.h"

namespace tessera {
namespace {

using testing::mar_parity_dir;
using testing::relative_error;

#define SKIP_WITHOUT_MAR_FIXTURE() \
  TESSERA_SKIP_WITHOUT_MAR_FIXTURE("model.safetensors", "vae.safetensors", "io.safetensors")

int64_t metadata_int(const SafetensorsFile& file, const std::string& key) {
  return std::stoll(file.metadata().at(key));
}

Generator fixture_generator() {
  const std::filesystem::path dir = mar_parity_dir();
  return build_preset_generator(
      preset_from_reference_weights(dir / "model.safetensors"),
      {.transformer = dir / "model.safetensors", .tokenizer = dir / "vae.safetensors"});
}

// latent [B, C, h, w] as MAR's patchify (patch size 1) lays it out: [B, h·w, C].
at::Tensor patchify(const at::Tensor& latent) {
  return latent.flatten(2).transpose(1, 2).contiguous();
}

TEST(MarParity, ArchitectureComesFromTheTensorsAndAgreesWithTheMetadata) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(mar_parity_dir() / "model.safetensors");
  const MarArchitecture a = mar_architecture(model.all(), model.metadata());
  EXPECT_EQ(a.encoder_width, metadata_int(model, "mar.encoder_embed_dim"));
  EXPECT_EQ(a.encoder_depth, metadata_int(model, "mar.encoder_depth"));
  EXPECT_EQ(a.encoder_heads, metadata_int(model, "mar.encoder_num_heads"));
  EXPECT_EQ(a.decoder_width, metadata_int(model, "mar.decoder_embed_dim"));
  EXPECT_EQ(a.decoder_depth, metadata_int(model, "mar.decoder_depth"));
  EXPECT_EQ(a.decoder_heads, metadata_int(model, "mar.decoder_num_heads"));
  EXPECT_EQ(a.token_channels, metadata_int(model, "mar.token_embed_dim"));
  EXPECT_EQ(a.grid, metadata_int(model, "mar.seq_h"));
  EXPECT_EQ(a.buffer_size, metadata_int(model, "mar.buffer_size"));
  EXPECT_EQ(a.num_classes, metadata_int(model, "mar.class_num"));
  EXPECT_EQ(a.diffloss_width, metadata_int(model, "mar.diffloss_w"));
  EXPECT_EQ(a.diffloss_depth, metadata_int(model, "mar.diffloss_d"));
  EXPECT_EQ(static_cast<double>(a.mlp_hidden),
            std::stod(model.metadata().at("mar.mlp_ratio")) * static_cast<double>(a.encoder_width));

  // Every tensor of the file is a parameter (README-mar.md: no buffers): the preset's count is
  // the file's, and the strict load takes each one.
  int64_t reference = 0;
  for (const auto& [key, tensor] : model.all()) reference += tensor.numel();
  const GeneratorPreset preset =
      preset_from_reference_weights(mar_parity_dir() / "model.safetensors");
  EXPECT_EQ(preset.family, PresetFamily::mar);
  EXPECT_EQ(transformer_parameter_count(preset.generator), reference);
  EXPECT_EQ(preset.generator.schedule.mar.sampling.steps, metadata_int(model, "sample.num_iter"));
  EXPECT_EQ(preset.generator.sampling.guidance.kind, GuidanceKind::mar_token_ramp);
  EXPECT_DOUBLE_EQ(preset.generator.sampling.guidance.scale,
                   std::stod(model.metadata().at("sample.cfg")));
  EXPECT_EQ(preset.generator.sampling.head.diffusion.steps,
            metadata_int(model, "mar.num_sampling_steps"));
}

// Truncated or foreign state dicts are refused by MAR's names, and nothing is copied.
TEST(MarParity, WrongStateDictsAreRefusedNamingTheTensor) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(mar_parity_dir() / "model.safetensors");
  Generator generator = fixture_generator();
  const at::Tensor before = generator.backbone().state_dict().at("blocks.0.norm1.weight").clone();
  std::map<std::string, at::Tensor> truncated = model.all();
  truncated.erase("mask_token");
  truncated.erase("decoder_blocks.1.mlp.fc2.bias");
  testing::expect_error([&] { load_mar_transformer(generator, truncated); },
                        {"missing mask_token", "missing decoder_blocks.1.mlp.fc2.bias"});
  std::map<std::string, at::Tensor> extra = model.all();
  extra["encoder_blocks.9.norm1.weight"] = at::zeros({4});
  extra["fake_latent"] = at::zeros({1, 3});
  testing::expect_error([&] { load_mar_transformer(generator, extra); },
                        {"unexpected encoder_blocks.9.norm1.weight", "fake_latent"});
  std::map<std::string, at::Tensor> zeroed = model.all();
  zeroed["encoder_blocks.0.norm1.weight"] = at::zeros_like(zeroed["encoder_blocks.0.norm1.weight"]);
  zeroed.erase("diffloss.net.cond_embed.bias");
  testing::expect_error([&] { load_mar_transformer(generator, zeroed); },
                        {"missing diffloss.net.cond_embed.bias"});
  EXPECT_TRUE(at::equal(generator.backbone().state_dict().at("blocks.0.norm1.weight"), before));
  testing::expect_error([&] { mar_architecture({}); }, {"z_proj.weight"});
}

// forward_mae_encoder(tokens, mask, class_emb(label)) and forward_mae_decoder(encoder_out, mask),
// for the saved orders and mask; the tokens are the VAE's of the saved images.
TEST(MarParity, EncoderAndDecoderOutputsMatchTheReference) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  Generator generator = fixture_generator();
  const at::Tensor mask = io.tensor("mask").to(at::kBool);
  const int64_t masked = io.tensor("mask").sum(1)[0].item<int64_t>();
  EXPECT_TRUE(at::equal(mask, [&] {  // random_masking: the first `masked` positions of the order
    const at::Tensor orders = io.tensor("orders");
    return at::zeros(mask.sizes(), at::kBool).scatter_(1, orders.narrow(1, 0, masked), true);
  }()));
  const MarSchedule schedule(generator.config().schedule.mar);
  const ScheduleModels models{.backbone = generator.backbone(),
                              .head = generator.head(),
                              .tokenizer = &generator.tokenizer(),
                              .decoder = generator.decoder()};
  const MarEncoderDecoderOutputs out =
      schedule.forward(models, io.tensor("tokens"), mask, io.tensor("label").to(at::kLong));
  const at::Tensor encoder_ref = io.tensor("encoder_out"), z_ref = io.tensor("z");
  ASSERT_EQ(out.encoded.sizes(), encoder_ref.sizes());
  ASSERT_EQ(out.hidden.sizes(), z_ref.sizes());
  const double encoder_error = relative_error(out.encoded, encoder_ref);
  const double z_error = relative_error(out.hidden, z_ref);
  const double masked_error = relative_error(out.hidden.index({mask}), io.tensor("z_masked"));
  std::printf("MAR encoder_out %.3g, z %.3g, z_masked %.3g relative error\n", encoder_error,
              z_error, masked_error);
  EXPECT_LT(encoder_error, 1e-4);
  EXPECT_LT(z_error, 1e-4);
  EXPECT_LT(masked_error, 1e-4);
}

// np.random.seed(s), then one np.random.shuffle(np.arange(n)) per row. The first case is
// numpy's well-known permutation for seed 0; the second was printed by numpy 2.4.6; the fixture
// saved the other two.
TEST(MarParity, NumpyShufflesAreSampleOrders) {
  at::Tensor expected = at::tensor({2, 8, 4, 9, 1, 6, 7, 3, 0, 5}, at::kLong).view({1, 10});
  EXPECT_TRUE(at::equal(numpy_shuffled_ranges(0, 1, 10), expected));
  expected = at::tensor({6, 3, 4, 0, 1, 5, 2, 4, 0, 3, 1, 2, 5, 6}, at::kLong).view({2, 7});
  EXPECT_TRUE(at::equal(numpy_shuffled_ranges(12345, 2, 7), expected));
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  for (const auto& [orders, seed_key] : {std::pair<std::string, std::string>{"orders", "mask_seed"},
                                         {"sample.orders", "sample_seed"}}) {
    const at::Tensor reference = io.tensor(orders);
    const auto seed = static_cast<uint32_t>(std::stoul(io.metadata().at(seed_key)));
    EXPECT_TRUE(
        at::equal(numpy_shuffled_ranges(seed, reference.size(0), reference.size(1)), reference))
        << orders;
  }
}

// p_sample_loop(net, x_T, c) with its noises drawn from torch.manual_seed(diff_seed): one draw per
// step, the last (multiplied by 0) included.
TEST(MarParity, DiffusionLoopGivenTheNoiseMatchesTheReference) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  Generator generator = fixture_generator();
  const int64_t steps = metadata_int(io, "mar.num_sampling_steps");
  const uint64_t seed = std::stoull(io.metadata().at("diff_seed"));
  const at::Tensor x_T = io.tensor("p_sample.x_T");
  // The stream itself: consecutive randn calls of the noises' shape.
  at::Generator g = make_cpu_generator(seed);
  for (int64_t k = 0; k < steps; ++k) {
    const at::Tensor noise = io.tensor(fmt::format("p_sample.noise.{}", k));
    ASSERT_TRUE(at::equal(at::empty(noise.sizes()).normal_(0.0, 1.0, g), noise)) << k;
  }
  HeadSamplingOptions options = generator.config().sampling.head;
  options.diffusion.steps = steps;
  options.temperature = 1.0;
  SampleRngs rngs = SampleRngs::shared_stream(seed, 1);
  auto& head = dynamic_cast<DiffusionHead&>(generator.head());
  head.set_training(false);
  const at::Tensor out =
      head.denoise(x_T, io.tensor("p_sample.c"), Guidance::none(), options, rngs);
  const double error = relative_error(out, io.tensor("p_sample.out"));
  std::printf("MAR p_sample_loop: relative error %.3g\n", error);
  EXPECT_LT(error, 1e-4);
}

// sample_tokens(bsz, num_iter, cfg, cfg_schedule, labels, temperature) after np.random.seed(s)
// and torch.manual_seed(s): the tokens, and vae.decode(tokens / scale).
TEST(MarParity, ReferenceSeedingReproducesSampleTokensAndImage) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  Generator generator = fixture_generator();
  const at::Tensor labels = io.tensor("sample.labels").to(at::kLong);
  const SampleRequest request{.seed = std::stoull(io.metadata().at("sample_seed")),
                              .reference_seeding = true};
  const Tokens tokens = generator.sample_tokens(labels, request);
  const at::Tensor reference = patchify(io.tensor("sample.tokens"));
  ASSERT_EQ(tokens.scales[0].sizes(), reference.sizes());
  const double token_error = relative_error(tokens.scales[0], reference);
  auto& vae = dynamic_cast<KlVae&>(generator.tokenizer());
  const at::Tensor image_ref = io.tensor("sample_image");
  const at::Tensor latent =
      tokens.scales[0].transpose(1, 2).reshape(
          {image_ref.size(0), -1, tokens.grids[0].height, tokens.grids[0].width}) /
      vae.kl_vae_config().latent_scale;
  const double image_error = relative_error(vae.decode_latent(latent), image_ref);
  std::printf("MAR sample.tokens %.3g, sample_image %.3g relative error\n", token_error,
              image_error);
  EXPECT_LT(token_error, 1e-4);
  EXPECT_LT(image_error, 1e-4);
  // Another seed draws other tokens: the match is the stream's.
  SampleRequest other = request;
  other.seed += 1;
  EXPECT_GT(relative_error(generator.sample_tokens(labels, other).scales[0], reference), 1e-2);
}

}  // namespace
}  // namespace tessera
