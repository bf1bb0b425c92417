// LlamaGen presets: the named presets have the reference modules' exact sizes (gpt.py GPT_B ...
// GPT_3B at FoundationVision/LlamaGen ce98ec4, c2i over 16384 codes and 1000 classes), and the
// state-dict layouts the reference's own constructors give (key lists of GPT_B and VQ_16 in
// tests/compat/data) load into the preset's parts key for key and shape for shape.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>

#include "common/error_message.h"
#include "common/reference_key_list.h"
#include "tessera/compat/llamagen.h"
#include "tessera/compat/llamagen_vq.h"
#include "tessera/compat/presets.h"
#include "tessera/core/config.h"
#include "tessera/head/discrete_head.h"
#include "tessera/nn/backbone.h"

namespace tessera {
namespace {

TEST(LlamagenPresets, SizesAreTheReferenceModules) {
  // sum(p.numel() for p in GPT_X(vocab_size=16384, num_classes=1000, ...).parameters()); the
  // paper rounds them to 111M, 343M, 775M, 1.4B and 3.1B.
  const std::map<std::string, int64_t> reference = {{"b", 110'888'448},
                                                    {"l", 342'910'976},
                                                    {"xl", 774'699'520},
                                                    {"xxl", 1'410'972'672},
                                                    {"3b", 3'096'659'200}};
  for (const auto& [size, count] : reference) {
    for (const auto& [suffix, side] : std::map<std::string, int64_t>{{"", 256}, {"-384", 384}}) {
      const std::string name = "llamagen-" + size + suffix;
      const GeneratorPreset p = generator_preset(name);
      EXPECT_EQ(transformer_parameter_count(p.generator), count) << name;
      EXPECT_EQ(p.published_parameters, count) << name;
      EXPECT_EQ(p.family, PresetFamily::llamagen) << name;
      EXPECT_EQ(p.generator.image_size, side) << name;
      EXPECT_EQ(p.generator.backbone.rope_grid, side / 16) << name;
      EXPECT_EQ(p.generator.schedule.kind, ScheduleKind::raster) << name;
    }
  }
  // sample_c2i.py's defaults: cfg_scale 4.0 on every token, top-k 2000, top-p 1, temperature 1.
  const GenerationOptions& o = generator_preset("llamagen-b").generator.sampling;
  EXPECT_EQ(o.guidance.kind, GuidanceKind::constant);
  EXPECT_DOUBLE_EQ(o.guidance.scale, 4.0);
  EXPECT_EQ(o.head.discrete.top_k, 2000);
  EXPECT_DOUBLE_EQ(o.head.discrete.top_p, 1.0);
  EXPECT_DOUBLE_EQ(o.head.temperature, 1.0);
  testing::expect_error([] { generator_preset("llamagen-m"); }, {"llamagen-b", "llamagen-3b-384"});
}

// GPT_B's state dict (every key and shape from the reference constructor) loads strictly into
// the llamagen-b preset's backbone and head.
TEST(LlamagenPresets, GptBKeysLoadIntoThePreset) {
  const std::map<std::string, at::Tensor> reference =
      testing::reference_key_list("llamagen_gpt_b_state_dict.txt");
  ASSERT_EQ(reference.size(), 88u);
  const GeneratorPreset p = generator_preset("llamagen-b");
  Backbone backbone(p.generator.backbone, 0);
  DiscreteHead head(p.generator.head.discrete, 0);
  load_llamagen_transformer(backbone, head, reference);  // throws on any mismatch
  EXPECT_EQ(head.state_dict().at("head.weight").abs().sum().item<double>(), 0.0);
  EXPECT_EQ(backbone.state_dict().at("word_embed.weight").abs().sum().item<double>(), 0.0);
}

// VQ_16's state dict: its architecture read from the shapes is the preset's tokenizer, and it
// loads strictly (quantize.codebook_used skipped).
TEST(LlamagenPresets, Vq16KeysAreThePresetTokenizer) {
  const std::map<std::string, at::Tensor> reference =
      testing::reference_key_list("llamagen_vq16_state_dict.txt");
  ASSERT_EQ(reference.size(), 344u);
  const VqVaeConfig read = llamagen_vq_config(reference);
  const VqVaeConfig preset = generator_preset("llamagen-b").tokenizer.vq_vae.value();
  EXPECT_EQ(config_to_json(read), config_to_json(preset));
  VqVae vq(read, 0);
  load_llamagen_vq(vq, reference);
  int64_t parameters = 0;
  for (const auto& t : vq.parameters()) parameters += t.numel();
  EXPECT_EQ(parameters, 71'883'403);  // sum(p.numel() for p in VQ_16().parameters())
}

}  // namespace
}  // namespace tessera
