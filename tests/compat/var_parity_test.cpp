// Conformance: Tessera's multi-scale VQ-VAE against FoundationVision/VAR's own outputs.
//
// The fixture (../shared/parity/var-tiny, or $TESSERA_PARITY_DIR) holds VAR's vae state dict
// under the reference's key names and the reference's outputs for three images. The model is
// configured from the files alone (load_var_vae reads __metadata__ and the
// tensor shapes), so a fixture made the same way at another size passes too.
// Tolerances from the fixture's README: ids exact; f, fhat, recon (and the teacher-forcing input)
// within 1e-4 relative, ‖out − ref‖ / ‖ref‖.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "common/parity_dir.h"
#include "tessera/io/safetensors.h"
#include "tessera/compat/var_vae.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"

namespace tessera {
namespace {

using testing::parity_dir;

// ‖out − ref‖ / ‖ref‖, printed so that the margin to the tolerance shows in the test log.
double relative_error(const at::Tensor& out, const at::Tensor& ref, const char* what) {
  EXPECT_EQ(out.sizes(), ref.sizes()) << what;
  const at::Tensor o = out.to(at::kDouble).cpu(), r = ref.to(at::kDouble).cpu();
  const double error = (o - r).norm().item<double>() / r.norm().item<double>();
  std::printf("  %s: relative error %.3g\n", what, error);
  return error;
}

class VarParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = parity_dir();
    if (!testing::missing_parity_file(dir, {"vqvae.safetensors", "io.safetensors"}).empty()) {
      return;  // SetUp skips each test naming the missing file
    }
    model_ = load_var_vae(dir / "vqvae.safetensors").release();
    io_ = new SafetensorsFile(SafetensorsFile::open(dir / "io.safetensors"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete io_;
    model_ = nullptr;
    io_ = nullptr;
  }
  void SetUp() override {
    TESSERA_SKIP_WITHOUT_VAR_FIXTURE(parity_dir(), "vqvae.safetensors", "io.safetensors");
  }
  static std::vector<at::Tensor> reference_ids() {
    std::vector<at::Tensor> ids;
    for (int64_t s = 0; s < model_->num_scales(); ++s) {
      ids.push_back(io_->tensor("idx." + std::to_string(s)));
    }
    return ids;
  }

  static MultiScaleVqVae* model_;
  static SafetensorsFile* io_;
};

MultiScaleVqVae* VarParityTest::model_ = nullptr;
SafetensorsFile* VarParityTest::io_ = nullptr;

TEST_F(VarParityTest, ConfigurationComesFromTheFiles) {
  const auto& metadata = io_->metadata();
  const auto& config = model_->multiscale_config();
  EXPECT_EQ(config.quantizer.codebook_size, std::stoll(metadata.at("vocab_size")));
  EXPECT_EQ(config.autoencoder.latent_channels, std::stoll(metadata.at("Cvae")));
  EXPECT_EQ(config.autoencoder.base_channels, std::stoll(metadata.at("ch")));
  EXPECT_EQ(config.quantizer.phi_count, std::stoll(metadata.at("share_quant_resi")));
  std::string patch_nums;
  for (int64_t pn : config.quantizer.patch_nums) {
    if (!patch_nums.empty()) patch_nums += ',';
    patch_nums += std::to_string(pn);
  }
  EXPECT_EQ(patch_nums, metadata.at("patch_nums"));
  // Every reference tensor was consumed (load is strict) and nothing extra exists.
  const auto reference = SafetensorsFile::open(parity_dir() / "vqvae.safetensors");
  EXPECT_EQ(model_->state_dict().size(), reference.size());
}

TEST_F(VarParityTest, LatentMatchesReference) {
  const at::Tensor image = io_->tensor("image");
  at::NoGradGuard no_grad;
  const at::Tensor f = model_->encode_latent(image);
  EXPECT_LT(relative_error(f, io_->tensor("f"), "f"), 1e-4);
}

TEST_F(VarParityTest, IdsMatchReferenceExactly) {
  const Tokens tokens = model_->encode(io_->tensor("image"));
  ASSERT_EQ(tokens.num_scales(), model_->num_scales());
  for (int64_t s = 0; s < tokens.num_scales(); ++s) {
    const at::Tensor expected = io_->tensor("idx." + std::to_string(s));
    const at::Tensor got = tokens.scales[static_cast<size_t>(s)];
    ASSERT_EQ(got.sizes(), expected.sizes()) << "scale " << s;
    EXPECT_TRUE(at::equal(got.cpu(), expected))
        << "scale " << s << "\n got " << got << "\n expected " << expected;
  }
}

TEST_F(VarParityTest, FhatMatchesReference) {
  // From the reference latent and from the reference ids: both routes must give VAR's f_hat.
  const auto f_hats = model_->latent_to_f_hats(io_->tensor("f"));
  EXPECT_LT(relative_error(f_hats.back(), io_->tensor("fhat"), "fhat (from f)"), 1e-4);
  EXPECT_LT(
      relative_error(model_->ids_to_f_hat(reference_ids()), io_->tensor("fhat"), "fhat (from ids)"),
      1e-4);
}

TEST_F(VarParityTest, ReconstructionMatchesReference) {
  Tokens tokens;
  tokens.scales = reference_ids();
  const at::Tensor image = io_->tensor("image");
  tokens.grids = model_->token_grids(image.size(2), image.size(3));
  const at::Tensor recon = model_->decode(tokens);
  EXPECT_LT(relative_error(recon, io_->tensor("recon"), "recon"), 1e-4);
}

TEST_F(VarParityTest, TeacherForcingInputMatchesReference) {
  const at::Tensor input = model_->teacher_forcing_input(reference_ids());
  const at::Tensor expected = io_->tensor("var_input");
  ASSERT_EQ(input.sizes(), expected.sizes());
  EXPECT_LT(relative_error(input, expected, "var_input"), 1e-4);
}

TEST_F(VarParityTest, StepwiseNextScaleInputsEqualTeacherForcing) {
  // Sampling builds the same inputs one scale at a time (get_next_autoregressive_input).
  const auto ids = reference_ids();
  const at::Tensor expected = io_->tensor("var_input");
  at::Tensor f_hat = model_->empty_f_hat(ids[0].size(0));
  int64_t offset = 0;
  for (int64_t s = 0; s + 1 < model_->num_scales(); ++s) {
    model_->add_scale_ids(f_hat, s, ids[static_cast<size_t>(s)]);
    const at::Tensor next = model_->next_scale_input(f_hat, s + 1);
    const at::Tensor ref = expected.slice(1, offset, offset + next.size(1));
    EXPECT_LT(relative_error(next, ref, "next-scale input"), 1e-4) << "scale " << s + 1;
    offset += next.size(1);
  }
  EXPECT_EQ(offset, expected.size(1));
  model_->add_scale_ids(f_hat, model_->num_scales() - 1, ids.back());
  EXPECT_LT(relative_error(f_hat, io_->tensor("fhat"), "stepwise fhat"), 1e-4);
}

}  // namespace
}  // namespace tessera
