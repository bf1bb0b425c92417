// MAR's DiffLoss head against the reference fixture (../shared/parity/mar-tiny, or
// $TESSERA_PARITY_MAR_DIR; README-mar.md there): the sizes from the tensors and the metadata
// agreeing, SimpleMLPAdaLN's output for the saved (x_t, t, c) within 1e-4 relative, and the
// respaced cosine schedule of the sampling diffusion (timestep map, β, ᾱ) as the reference's.

#include "tessera/compat/mar_diffloss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "common/relative_error.h"
#include "tessera/head/diffusion_head.h"
#include "tessera/head/gaussian_diffusion.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

using testing::mar_parity_dir;
using testing::relative_error;

#define SKIP_WITHOUT_MAR_FIXTURE() \
  TESSERA_SKIP_WITHOUT_MAR_FIXTURE("model.safetensors", "io.safetensors")

TEST(MarDiffLoss, SizesComeFromTheTensorsAndAgreeWithTheMetadata) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(mar_parity_dir() / "model.safetensors");
  const auto& m = model.metadata();
  const DiffusionHeadConfig c = mar_diffloss_config(model.all());
  EXPECT_EQ(c.mlp.token_channels, std::stoll(m.at("mar.token_embed_dim")));
  EXPECT_EQ(c.mlp.hidden_width, std::stoll(m.at("mar.decoder_embed_dim")));
  EXPECT_EQ(c.mlp.width, std::stoll(m.at("mar.diffloss_w")));
  EXPECT_EQ(c.mlp.depth, std::stoll(m.at("mar.diffloss_d")));
  EXPECT_EQ(c.mlp.frequency_embedding_size, std::stoll(m.at("diffusion.frequency_embedding_size")));
  EXPECT_EQ(c.training_steps, std::stoll(m.at("diffusion.train_steps")));
  EXPECT_EQ(m.at("diffusion.noise_schedule"), "cosine");
  EXPECT_EQ(m.at("diffusion.model_var_type"), "LEARNED_RANGE");
  EXPECT_TRUE(c.learn_variance);

  DiffusionHead head(c, 0);
  head.load_state_dict(mar_diffloss_state_dict(model.all()));  // strict
  int64_t reference = 0;
  for (const auto& [key, tensor] : model.all()) {
    if (key.starts_with("diffloss.")) reference += tensor.numel();
  }
  int64_t ours = 0;
  for (const auto& p : head.parameters()) ours += p.numel();
  EXPECT_EQ(ours, reference);
  testing::expect_error([] { mar_diffloss_config({}); }, {"diffloss.net.input_proj.weight"});
}

// diffloss.net(x_t, t, c): ε (channels 0..C-1) and the variance values (C..2C-1).
TEST(MarDiffLoss, NetOutputMatchesTheReference) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(mar_parity_dir() / "model.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  DiffusionHead head(mar_diffloss_config(model.all()), 0);
  head.load_state_dict(mar_diffloss_state_dict(model.all()));
  head.set_training(false);
  at::NoGradGuard no_grad;
  const at::Tensor out =
      head.predict(io.tensor("net.x_t"), io.tensor("net.t").to(at::kFloat), io.tensor("net.c"));
  const at::Tensor reference = io.tensor("net_out");
  ASSERT_EQ(out.sizes(), reference.sizes());
  const double error = relative_error(out, reference);
  std::printf("MAR DiffLoss net_out: relative error %.3g\n", error);
  EXPECT_LT(error, 1e-4);
}

// create_diffusion(timestep_respacing="10", noise_schedule="cosine"): the kept timesteps and the
// respaced β and ᾱ, in float64.
TEST(MarDiffLoss, RespacedScheduleMatchesTheReference) {
  SKIP_WITHOUT_MAR_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(mar_parity_dir() / "model.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(mar_parity_dir() / "io.safetensors");
  const int64_t steps = std::stoll(model.metadata().at("mar.num_sampling_steps"));
  const GaussianDiffusion d = GaussianDiffusion::respaced(BetaSchedule::cosine, 1000, steps);
  const at::Tensor map = io.tensor("diffusion.timestep_map").to(at::kLong);
  ASSERT_EQ(d.size(), map.numel());
  for (int64_t k = 0; k < d.size(); ++k) {
    EXPECT_EQ(d.timestep_map()[k], map[k].item<int64_t>()) << k;
  }
  const auto as_tensor = [](const std::vector<double>& v) {
    return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
  };
  EXPECT_LT(relative_error(as_tensor(d.betas()), io.tensor("diffusion.betas")), 1e-12);
  EXPECT_LT(relative_error(as_tensor(d.alphas_cumprod()), io.tensor("diffusion.alphas_cumprod")),
            1e-12);
}

}  // namespace
}  // namespace tessera
