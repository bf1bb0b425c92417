// VAR presets (Note [VAR presets]): the named presets have the published transformer sizes
// (counted from the configs, without allocating billions of parameters), and the architecture a
// reference fixture describes in its metadata builds a backbone and head into which the
// reference's VAR state dict loads strictly, by its own key names, and reproduces the reference
// logits within 1e-4 relative. The fixture is ../shared/parity/var-tiny (or $TESSERA_PARITY_DIR):
// any fixture made the same way at another size passes too.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "tessera/core/error.h"
#include "tessera/io/safetensors.h"
#include "tessera/head/discrete_head.h"
#include "tessera/nn/backbone.h"
#include "tessera/compat/presets.h"

namespace tessera {
namespace {

using testing::parity_dir;

// The published sizes with the precision they are given in (310M: to the million, 1.0B: to the
// hundred million): |count − published| must be within half the last published digit.
TEST(VarPresets, TransformerSizesAreThePublishedOnes) {
  const std::map<std::string, int64_t> half_digit = {{"var-d16", 500'000},
                                                     {"var-d20", 5'000'000},
                                                     {"var-d24", 50'000'000},
                                                     {"var-d30", 50'000'000}};
  int64_t var_presets = 0;
  for (const std::string& name : generator_preset_names()) {
    if (!name.starts_with("var-")) continue;
    ++var_presets;
    const GeneratorPreset p = generator_preset(name);
    const int64_t count = transformer_parameter_count(p.generator);
    std::printf("%s: %lld parameters (published %lld)\n", name.c_str(),
                static_cast<long long>(count), static_cast<long long>(p.published_parameters));
    EXPECT_LE(std::llabs(count - p.published_parameters), half_digit.at(name)) << name;
    // VAR-d{d}: width 64·d, d heads, the 680-token pyramid, VAR's codebook and classes.
    EXPECT_EQ(p.generator.backbone.width, 64 * p.generator.backbone.depth) << name;
    EXPECT_EQ(p.generator.backbone.num_heads, p.generator.backbone.depth) << name;
    EXPECT_EQ(p.generator.backbone.max_length(), 680) << name;
    EXPECT_EQ(p.generator.head.discrete.vocab_size, 4096) << name;
    EXPECT_EQ(p.generator.backbone.num_classes, 1000) << name;
  }
  EXPECT_EQ(var_presets, static_cast<int64_t>(half_digit.size()));
  EXPECT_NE(testing::error_message_of([] { generator_preset("var-d17"); }).find("var-d16"),
            std::string::npos);
}

TEST(VarPresets, MetadataErrorsNameTheKey) {
  std::map<std::string, std::string> m = {{"depth", "2"},
                                          {"width", "128"},
                                          {"heads", "2"},
                                          {"vocab_size", "64"},
                                          {"Cvae", "8"},
                                          {"ch", "32"},
                                          {"num_classes", "10"},
                                          {"share_quant_resi", "4"},
                                          {"patch_nums", "1,2,3,4"}};
  EXPECT_EQ(var_architecture_from_metadata(m).patch_nums, (std::vector<int64_t>{1, 2, 3, 4}));
  auto without = m;
  without.erase("heads");
  EXPECT_NE(testing::error_message_of([&] {
              var_architecture_from_metadata(without);
            }).find("'heads' is missing"),
            std::string::npos);
  auto malformed = m;
  malformed["patch_nums"] = "1,2,x";
  EXPECT_NE(testing::error_message_of([&] {
              var_architecture_from_metadata(malformed);
            }).find("not an integer"),
            std::string::npos);
}

TEST(VarPresets, FixtureArchitectureReproducesTheReferenceLogits) {
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "var.safetensors", "io.safetensors");
  const SafetensorsFile var = SafetensorsFile::open(dir / "var.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const VarArchitecture a = var_architecture_from_metadata(var.metadata());
  const GeneratorPreset p = var_generator_preset(a);

  Backbone backbone(p.generator.backbone, 0);
  auto head = make_head(p.generator.head, 0);
  std::map<std::string, at::Tensor> head_tensors;
  for (const auto& [key, tensor] : var.all())
    if (key.starts_with("head.") || key.starts_with("head_nm.")) head_tensors.emplace(key, tensor);
  const StateDictLoadReport report = backbone.load_state_dict(
      var.all(), {.strict = true, .ignore_prefixes = {"head.", "head_nm."}});
  EXPECT_TRUE(report.complete()) << report.summary();
  head->load_state_dict(head_tensors);  // strict
  // Every tensor of the reference went somewhere (VAR's derived buffers are recomputed).
  EXPECT_EQ(report.loaded.size() + head_tensors.size() + var_derived_buffer_keys().size(),
            var.size());
  EXPECT_EQ(
      transformer_parameter_count(p.generator), backbone.num_parameters() + [&] {
        int64_t n = 0;
        for (const auto& t : head->parameters()) n += t.numel();
        return n;
      }());

  backbone.set_training(false);
  head->set_training(false);
  at::NoGradGuard no_grad;
  const BackboneOutput out = backbone.forward(io.tensor("var_input"), io.tensor("label"),
                                              BlockMask::block_causal(backbone.layout()));
  const int64_t B = out.hidden.size(0), L = out.hidden.size(1);
  auto& discrete = dynamic_cast<DiscreteHead&>(*head);
  const at::Tensor logits =
      discrete.logits(out.hidden.reshape({B * L, a.width}), out.condition.repeat_interleave(L, 0))
          .view({B, L, -1});
  const at::Tensor reference = io.tensor("logits");
  ASSERT_EQ(logits.sizes(), reference.sizes());
  const double rel = (logits.to(at::kDouble) - reference.to(at::kDouble)).norm().item<double>() /
                     reference.to(at::kDouble).norm().item<double>();
  std::printf("VAR logits: relative error %.3g\n", rel);
  EXPECT_LT(rel, 1e-4);
}

}  // namespace
}  // namespace tessera
