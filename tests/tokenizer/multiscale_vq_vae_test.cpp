// The multi-scale VQ-VAE beyond the parity fixture: Phi selection against the reference's
// arithmetic, the training objective against its definition, the straight-through gradient, and
// bad input.

#include "tessera/tokenizer/multiscale_vq_vae.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {
namespace {

// A small 3-channel model: 16x16 images, downsampling 4, latent 4x4, scales 1, 2, 4.
MultiScaleVqVaeConfig tiny_config() {
  MultiScaleVqVaeConfig config;
  auto& ae = config.autoencoder;
  ae.image_channels = 3;
  ae.base_channels = 8;
  ae.channel_multipliers = {1, 2, 2};
  ae.res_blocks_per_level = 1;
  ae.lowest_level_attention = true;
  ae.middle_attention = true;
  ae.latent_channels = 4;
  ae.norm_groups = 4;
  config.quantizer.codebook_size = 16;
  config.quantizer.patch_nums = {1, 2, 4};
  config.quantizer.phi_count = 4;
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

TEST(VarPhiSelection, TicksMatchNumpyLinspace) {
  // np.linspace(1/12, 11/12, 4) and np.linspace(1/6, 5/6, 3), printed by Python with repr().
  const auto four = var_phi_ticks(4);
  ASSERT_EQ(four.size(), 4u);
  EXPECT_EQ(four[0], 0.08333333333333333);
  EXPECT_EQ(four[1], 0.36111111111111105);
  EXPECT_EQ(four[2], 0.6388888888888888);
  EXPECT_EQ(four[3], 0.9166666666666666);
  const auto three = var_phi_ticks(3);
  EXPECT_EQ(three[0], 1.0 / 2.0 / 3.0);
  EXPECT_EQ(three[2], 1.0 - 1.0 / 2.0 / 3.0);
}

TEST(VarPhiSelection, PartiallySharedMatchesReferenceTable) {
  // np.argmin(np.abs(ticks - si/(S-1))) for K = 4, computed in float64 by the reference's
  // arithmetic. S = 3 and 5: 0.5 lies nearer to 23/36 than to 13/36 in floating point.
  const std::vector<std::vector<int64_t>> expected = {
      {0, 3},                          // S = 2
      {0, 2, 3},                       // S = 3
      {0, 1, 2, 3},                    // S = 4
      {0, 1, 2, 2, 3},                 // S = 5
      {0, 0, 1, 2, 3, 3},              // S = 6
      {0, 0, 1, 2, 2, 3, 3},           // S = 7
      {0, 0, 1, 1, 2, 2, 3, 3},        // S = 8
      {0, 0, 1, 1, 2, 2, 2, 3, 3},     // S = 9
      {0, 0, 1, 1, 1, 2, 2, 3, 3, 3},  // S = 10: VAR's 1,2,3,4,5,6,8,10,13,16
  };
  for (size_t row = 0; row < expected.size(); ++row) {
    const int64_t scales = static_cast<int64_t>(row) + 2;
    for (int64_t si = 0; si < scales; ++si) {
      EXPECT_EQ(var_phi_index(si, scales, 4), expected[row][static_cast<size_t>(si)])
          << "S=" << scales << " si=" << si;
    }
  }
}

TEST(VarPhiSelection, SharedAndNonSharedModes) {
  for (int64_t si = 0; si < 10; ++si) {
    EXPECT_EQ(var_phi_index(si, 10, 1), 0);   // PhiShared
    EXPECT_EQ(var_phi_index(si, 10, 0), si);  // PhiNonShared: one per scale
  }
  // K = 2: ticks 1/4, 3/4.
  EXPECT_EQ(var_phi_index(0, 3, 2), 0);
  EXPECT_EQ(var_phi_index(2, 3, 2), 1);
}

TEST(VarPhiSelection, SingleScaleIsRejected) {
  // The reference divides by S - 1 = 0 here; Tessera refuses with a message instead.
  EXPECT_NE(error_message([] { (void)var_phi_index(0, 1, 4); }).find("S >= 2"), std::string::npos);
  MultiScaleVqVaeConfig config = tiny_config();
  config.quantizer.patch_nums = {4};
  EXPECT_NE(error_message([&] { MultiScaleVqVae model(config); }).find("at least two scales"),
            std::string::npos);
}

TEST(MultiScaleVqVae, ParameterNamesFollowTheReferenceLayout) {
  const auto state = MultiScaleVqVae(tiny_config()).state_dict();
  for (const char* name :
       {"encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
        "encoder.down.0.downsample.conv.weight", "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.2.attn.0.qkv.weight", "encoder.mid.attn_1.proj_out.bias",
        "encoder.norm_out.weight", "decoder.up.2.attn.1.norm.weight",
        "decoder.up.1.upsample.conv.weight", "decoder.up.0.block.1.conv2.bias", "quant_conv.weight",
        "post_quant_conv.bias", "quantize.embedding.weight", "quantize.ema_vocab_hit_SV",
        "quantize.quant_resi.qresi_ls.3.weight"}) {
    EXPECT_TRUE(state.contains(name)) << name;
  }
  // No downsampling after the last level, no upsampling before the first.
  EXPECT_FALSE(state.contains("encoder.down.2.downsample.conv.weight"));
  EXPECT_FALSE(state.contains("decoder.up.0.upsample.conv.weight"));
  // share_quant_resi 1 and 0 name their Phis as PhiShared and PhiNonShared do.
  MultiScaleVqVaeConfig shared = tiny_config();
  shared.quantizer.phi_count = 1;
  EXPECT_TRUE(MultiScaleVqVae(shared).state_dict().contains("quantize.quant_resi.qresi.weight"));
  shared.quantizer.phi_count = 0;
  const auto non_shared = MultiScaleVqVae(shared).state_dict();
  EXPECT_TRUE(non_shared.contains("quantize.quant_resi.2.bias"));
  EXPECT_FALSE(non_shared.contains("quantize.quant_resi.3.bias"));
}

TEST(MultiScaleVqVae, TrainingObjectiveMatchesDefinition) {
  // VAR's objective: mean over scales of β‖sg[f̂_s] − f‖² + ‖f̂_s − sg[f]‖², whose value is
  // (1 + β)·mean_s MSE(f̂_s, f). f̂_s comes from the evaluation path (checked against the
  // reference by the parity test).
  MultiScaleVqVae model(tiny_config(), /*seed=*/5);
  const at::Tensor images = at::rand({2, 3, 16, 16}) * 2 - 1;
  at::Tensor f;
  std::vector<at::Tensor> f_hats;
  {
    at::NoGradGuard no_grad;
    f = model.encode_latent(images);
    f_hats = model.latent_to_f_hats(f);
  }
  double expected = 0;
  for (const auto& f_hat : f_hats) expected += at::mse_loss(f_hat, f).item<double>();
  expected *= (1.0 + 0.25) / static_cast<double>(f_hats.size());

  const TokenizerTrainingOutput out = model.training_forward(images);
  EXPECT_NEAR(out.regularization.item<double>(), expected, 1e-5 * expected);
  ASSERT_EQ(out.ids.size(), 3u);
  const Tokens tokens = model.encode(images);
  for (size_t s = 0; s < 3; ++s) EXPECT_TRUE(at::equal(out.ids[s], tokens.scales[s])) << s;
  // The decoder sees f̂ (forward value): the training reconstruction equals decode(ids) before
  // clamping, wherever decode did not clamp.
  const at::Tensor decoded = model.decode(tokens);
  const at::Tensor inside = decoded.abs() < 0.999;
  EXPECT_TRUE(at::allclose(out.reconstruction.detach().masked_select(inside),
                           decoded.masked_select(inside), 1e-4, 1e-5));
}

TEST(MultiScaleVqVae, GradientsReachEncoderCodebookAndPhi) {
  MultiScaleVqVae model(tiny_config(), /*seed=*/5);
  model.set_training(true);
  const at::Tensor images = at::rand({2, 3, 16, 16}) * 2 - 1;
  const TokenizerTrainingOutput out = model.training_forward(images);
  (out.reconstruction.square().mean() + out.regularization).backward();
  const auto state = model.state_dict();
  for (const char* name : {"encoder.conv_in.weight", "quantize.embedding.weight",
                           "quantize.quant_resi.qresi_ls.0.weight", "decoder.conv_out.weight"}) {
    const at::Tensor grad = state.at(name).grad();
    ASSERT_TRUE(grad.defined()) << name;
    EXPECT_GT(grad.abs().sum().item<double>(), 0.0) << name;
  }
  // Training records code usage per scale, as the reference's ema_vocab_hit_SV: the first record
  // is the histogram itself (1, 4 and 16 tokens per image).
  const at::Tensor hits = model.code_hits_per_scale();
  EXPECT_EQ(hits[0].sum().item<double>(), 2.0);
  EXPECT_EQ(hits[1].sum().item<double>(), 8.0);
  EXPECT_EQ(hits[2].sum().item<double>(), 32.0);
}

TEST(MultiScaleVqVae, ReconstructionGradientReachesTheEncoder) {
  // Ids are discrete; only the straight-through f̂ lets the reconstruction loss train the encoder.
  MultiScaleVqVae model(tiny_config(), /*seed=*/2);
  const at::Tensor images = at::rand({1, 3, 16, 16}) * 2 - 1;
  const TokenizerTrainingOutput out = model.training_forward(images);
  out.reconstruction.sum().backward();
  EXPECT_GT(model.state_dict().at("encoder.conv_in.weight").grad().abs().sum().item<double>(), 0);
}

TEST(MultiScaleVqVae, ShortTrainingReducesReconstructionError) {
  MultiScaleVqVae model(tiny_config(), /*seed=*/1);
  model.set_training(true);
  // Smooth images (a few blobs) are easy to fit.
  const at::Tensor grid = at::linspace(-1, 1, 16);
  const at::Tensor yy = grid.view({16, 1}).expand({16, 16}),
                   xx = grid.view({1, 16}).expand({16, 16});
  std::vector<at::Tensor> images;
  for (int i = 0; i < 4; ++i) {
    const double cx = -0.5 + 0.3 * i, cy = 0.4 - 0.25 * i;
    const at::Tensor blob = (-((xx - cx).square() + (yy - cy).square()) * 6).exp() * 2 - 1;
    images.push_back(blob.unsqueeze(0).expand({3, 16, 16}));
  }
  const at::Tensor batch = at::stack(images);
  auto recon_error = [&] {
    at::NoGradGuard no_grad;
    return at::mse_loss(model.reconstruct(batch), batch).item<double>();
  };
  const double before = recon_error();
  std::vector<at::Tensor> parameters = model.parameters();
  for (int step = 0; step < 60; ++step) {
    for (auto& p : parameters) {
      if (p.grad().defined()) p.grad().zero_();
    }
    const auto out = model.training_forward(batch);
    (at::mse_loss(out.reconstruction, batch) + out.regularization).backward();
    at::NoGradGuard no_grad;
    for (auto& p : parameters) {
      if (p.grad().defined()) p.sub_(p.grad().sign() * 2e-3);  // signSGD: scale-free and stable
    }
  }
  const double after = recon_error();
  EXPECT_LT(after, 0.5 * before) << "before " << before << " after " << after;
}

TEST(MultiScaleVqVaeBadInput, ImageSizeNotDivisibleByDownsampling) {
  MultiScaleVqVae model(tiny_config());
  const std::string message = error_message([&] { (void)model.encode(at::zeros({1, 3, 18, 16})); });
  EXPECT_NE(message.find("not divisible by the downsampling factor 4"), std::string::npos)
      << message;
}

TEST(MultiScaleVqVaeBadInput, PatchNumsMustEndAtTheLatentSize) {
  MultiScaleVqVae model(tiny_config());
  // 32x32 images give an 8x8 latent, but the last scale is 4x4.
  const std::string message = error_message([&] { (void)model.encode(at::zeros({1, 3, 32, 32})); });
  EXPECT_NE(message.find("patch_nums must end at the latent size"), std::string::npos) << message;
  EXPECT_THROW((void)model.latent_to_ids(at::zeros({1, 4, 5, 5})), Error);
}

TEST(MultiScaleVqVaeBadInput, IdsOutsideTheCodebook) {
  MultiScaleVqVae model(tiny_config());
  Tokens tokens;
  tokens.grids = model.token_grids(16, 16);
  for (const auto& grid : tokens.grids)
    tokens.scales.push_back(at::zeros({1, grid.count()}, at::kLong));
  tokens.scales[1][0][2] = 16;  // the codebook has 16 entries
  const std::string message = error_message([&] { (void)model.decode(tokens); });
  EXPECT_NE(message.find("id 16"), std::string::npos) << message;
  EXPECT_NE(message.find("outside the codebook [0, 16)"), std::string::npos) << message;
  tokens.scales[1][0][2] = -3;
  EXPECT_THROW((void)model.decode(tokens), Error);
  at::Tensor f_hat = model.empty_f_hat(1);
  EXPECT_THROW(model.add_scale_ids(f_hat, 0, at::full({1, 1}, 99, at::kLong)), Error);
}

TEST(MultiScaleVqVaeBadInput, WrongScalesAndShapes) {
  MultiScaleVqVae model(tiny_config());
  Tokens tokens;
  tokens.grids = {{1, 1}, {2, 2}};
  tokens.scales = {at::zeros({1, 1}, at::kLong), at::zeros({1, 4}, at::kLong)};
  EXPECT_THROW((void)model.decode(tokens), Error);                     // 2 scales, the model has 3
  EXPECT_THROW((void)model.encode(at::zeros({1, 1, 16, 16})), Error);  // 1 channel, expects 3
  EXPECT_THROW((void)model.encode(at::zeros({3, 16, 16})), Error);     // not a batch
  at::Tensor f_hat = model.empty_f_hat(1);
  EXPECT_THROW((void)model.next_scale_input(f_hat, 3), Error);  // scale out of range
}

TEST(MultiScaleVqVaeBadInput, GroupNormMustSplitTheChannels) {
  MultiScaleVqVaeConfig config = tiny_config();
  config.autoencoder.base_channels = 6;  // 6 channels into 4 groups
  const std::string message = error_message([&] { MultiScaleVqVae model(config); });
  EXPECT_NE(message.find("GroupNorm cannot split 6 channels"), std::string::npos) << message;
}

TEST(MultiScaleVqVaeBadInput, PatchNumsMustIncrease) {
  MultiScaleVqVaeConfig config = tiny_config();
  config.quantizer.patch_nums = {1, 3, 2, 4};
  EXPECT_NE(error_message([&] { MultiScaleVqVae model(config); }).find("strictly increasing"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
