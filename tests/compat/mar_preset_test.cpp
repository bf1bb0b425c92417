// MAR presets: the named presets have the reference modules' exact sizes (models/mar.py mar_base,
// mar_large, mar_huge at LTH14/mar fe470ac, with their DiffLoss), and the state-dict layouts the
// reference's own constructors give (key lists in tests/compat/data) read as the preset's
// architecture and load into its parts key for key and shape for shape; KL-16's layout is the
// preset's tokenizer.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>

#include "common/error_message.h"
#include "common/reference_key_list.h"
#include "tessera/compat/mar.h"
#include "tessera/compat/mar_vae.h"
#include "tessera/compat/presets.h"
#include "tessera/core/config.h"

namespace tessera {
namespace {

int64_t total_elements(const std::map<std::string, at::Tensor>& state_dict) {
  int64_t total = 0;
  for (const auto& [key, tensor] : state_dict) total += tensor.numel();
  return total;
}

TEST(MarPresets, SizesAreTheReferenceModules) {
  // sum(p.numel() for p in mar_X(buffer_size=64, diffloss_d, diffloss_w).parameters()), the key
  // lists' sums; the paper rounds them to 208M, 479M and 943M.
  const std::map<std::string, std::pair<const char*, int64_t>> reference = {
      {"b", {"mar_base_state_dict.txt", 207'924'768}},
      {"l", {"mar_large_state_dict.txt", 478'326'304}},
      {"h", {"mar_huge_state_dict.txt", 942'403'104}}};
  for (const auto& [size, source] : reference) {
    const std::string name = "mar-" + size;
    const std::map<std::string, at::Tensor> keys = testing::reference_key_list(source.first);
    EXPECT_EQ(total_elements(keys), source.second) << name;
    const GeneratorPreset p = generator_preset(name);
    EXPECT_EQ(transformer_parameter_count(p.generator), source.second) << name;
    EXPECT_EQ(p.published_parameters, source.second) << name;
    EXPECT_EQ(p.family, PresetFamily::mar) << name;
    EXPECT_EQ(p.generator.image_size, 256) << name;
    EXPECT_EQ(p.generator.schedule.kind, ScheduleKind::mar) << name;
    EXPECT_TRUE(p.generator.schedule.mar.encoder_decoder) << name;
    // The architecture the reference's layout describes is the preset's.
    const GeneratorPreset read = preset_from_reference_metadata({}, PresetFamily::mar, keys);
    EXPECT_EQ(config_to_json(read.generator.backbone), config_to_json(p.generator.backbone))
        << name;
    EXPECT_EQ(config_to_json(read.generator.decoder.value()),
              config_to_json(p.generator.decoder.value()))
        << name;
    EXPECT_EQ(config_to_json(read.generator.head), config_to_json(p.generator.head)) << name;
  }
  // main_mar.py's num_iter 64 and 100 diffusion steps; the README's cfg on a linear ramp.
  const GeneratorPreset b = generator_preset("mar-b");
  EXPECT_EQ(b.generator.schedule.mar.sampling.steps, 64);
  EXPECT_EQ(b.generator.sampling.head.diffusion.steps, 100);
  EXPECT_EQ(b.generator.sampling.guidance.kind, GuidanceKind::mar_token_ramp);
  EXPECT_DOUBLE_EQ(b.generator.sampling.guidance.scale, 2.9);
  EXPECT_DOUBLE_EQ(generator_preset("mar-l").generator.sampling.guidance.scale, 3.0);
  EXPECT_DOUBLE_EQ(generator_preset("mar-h").generator.sampling.guidance.scale, 3.2);
  EXPECT_DOUBLE_EQ(b.generator.sampling.head.temperature, 1.0);
  testing::expect_error([] { generator_preset("mar-xl"); }, {"mar-b", "mar-h"});
}

// mar_base's state dict loads strictly into the mar-b preset's encoder, decoder and head.
TEST(MarPresets, MarBaseKeysLoadIntoThePreset) {
  const std::map<std::string, at::Tensor> reference =
      testing::reference_key_list("mar_base_state_dict.txt");
  ASSERT_EQ(reference.size(), 364u);
  const GeneratorPreset p = generator_preset("mar-b");
  Generator generator = build_preset_generator(p, {});
  load_mar_transformer(generator, reference);  // throws on any mismatch
  EXPECT_EQ(generator.backbone().state_dict().at("input_norm.weight").abs().sum().item<double>(),
            0.0);
  EXPECT_EQ(generator.decoder()->state_dict().at("pos_out").abs().sum().item<double>(), 0.0);
}

// KL-16's layout reads as the preset's tokenizer.
TEST(MarPresets, Kl16KeysAreThePresetTokenizer) {
  const std::map<std::string, at::Tensor> reference =
      testing::reference_key_list("mar_kl16_vae_state_dict.txt");
  EXPECT_EQ(config_to_json(mar_vae_config(reference)),
            config_to_json(generator_preset("mar-b").tokenizer.kl_vae.value()));
}

}  // namespace
}  // namespace tessera
