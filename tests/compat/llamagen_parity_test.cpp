// LlamaGen's c2i GPT against the reference fixture (../shared/parity/llamagen-tiny, or
// $TESSERA_PARITY_LLAMAGEN_DIR; README-llamagen.md there), made by LlamaGen's own code at commit
// ce98ec4: every size from the files' metadata and shapes, the state dict loaded by the
// reference's key names, teacher-forced logits within 1e-4 of the reference's.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "common/relative_error.h"
#include "tessera/attention/block_mask.h"
#include "tessera/compat/llamagen.h"
#include "tessera/core/error.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

using testing::llamagen_parity_dir;

#define SKIP_WITHOUT_LLAMAGEN_FIXTURE() \
  TESSERA_SKIP_WITHOUT_LLAMAGEN_FIXTURE("model.safetensors", "io.safetensors")

using testing::relative_error;

struct Gpt {
  LlamagenArchitecture architecture;
  std::unique_ptr<Backbone> backbone;
  std::unique_ptr<DiscreteHead> head;
};

Gpt fixture_gpt(const SafetensorsFile& model) {
  const LlamagenArchitecture a = llamagen_architecture_from_metadata(model.metadata());
  Gpt gpt{a, std::make_unique<Backbone>(llamagen_backbone_config(a), 0),
          std::make_unique<DiscreteHead>(llamagen_head_config(a), 0)};
  load_llamagen_transformer(*gpt.backbone, *gpt.head, model.all());
  gpt.backbone->set_training(false);
  gpt.head->set_training(false);
  return gpt;
}

// The metadata's sizes agree with the tensors' shapes (so that the architecture is read, not
// assumed), and every tensor of the reference is used: the parameter counts are equal.
TEST(LlamagenParity, ArchitectureComesFromTheFiles) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(llamagen_parity_dir() / "model.safetensors");
  const LlamagenArchitecture a = llamagen_architecture_from_metadata(model.metadata());
  EXPECT_EQ(model.info("tok_embeddings.weight").shape,
            (std::vector<int64_t>{a.vocab_size, a.width}));
  EXPECT_EQ(model.info("cls_embedding.embedding_table.weight").shape,
            (std::vector<int64_t>{a.num_classes + 1, a.width}));  // + the null class
  EXPECT_EQ(model.info("layers.0.feed_forward.w1.weight").shape,
            (std::vector<int64_t>{a.ffn_hidden, a.width}));
  EXPECT_TRUE(model.contains("layers." + std::to_string(a.depth - 1) + ".attention.wo.weight"));
  EXPECT_FALSE(model.contains("layers." + std::to_string(a.depth) + ".attention.wo.weight"));

  int64_t reference = 0;
  for (const auto& [name, tensor] : model.all()) reference += tensor.numel();
  const Gpt gpt = fixture_gpt(model);
  int64_t ours = gpt.backbone->num_parameters();
  for (const auto& p : gpt.head->parameters()) ours += p.numel();
  EXPECT_EQ(ours, reference);
}

// GPT.forward(idx=codes[:, :-1], cond_idx=label) in eval mode: the class token and the first
// L - 1 codes under the causal mask; row i predicts code i.
TEST(LlamagenParity, TeacherForcedLogitsMatchTheReference) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(llamagen_parity_dir() / "model.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  Gpt gpt = fixture_gpt(model);
  at::NoGradGuard no_grad;
  const at::Tensor codes = io.tensor("codes").to(at::kLong);
  const at::Tensor inputs = codes.narrow(1, 0, codes.size(1) - 1);
  const BackboneOutput out = gpt.backbone->forward(inputs, io.tensor("label").to(at::kLong),
                                                   BlockMask::causal(gpt.backbone->layout()));
  const int64_t b = out.hidden.size(0), length = out.hidden.size(1);
  const at::Tensor logits =
      gpt.head->logits(out.hidden.reshape({b * length, gpt.architecture.width}))
          .view({b, length, -1});
  const at::Tensor reference = io.tensor("logits");
  ASSERT_EQ(logits.sizes(), reference.sizes());
  const double rel = relative_error(logits, reference);
  std::printf("LlamaGen teacher-forced logits: relative error %.3g\n", rel);
  EXPECT_LT(rel, 1e-4);
}

// A state dict that does not fit changes nothing and names the key.
TEST(LlamagenParity, AWrongStateDictIsAnErrorNamingTheKey) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile model = SafetensorsFile::open(llamagen_parity_dir() / "model.safetensors");
  const LlamagenArchitecture a = llamagen_architecture_from_metadata(model.metadata());
  Backbone backbone(llamagen_backbone_config(a), 0);
  DiscreteHead head(llamagen_head_config(a), 0);
  const at::Tensor before = backbone.state_dict().at("word_embed.weight").clone();

  std::map<std::string, at::Tensor> missing = model.all();
  missing.erase("layers.0.ffn_norm.weight");
  testing::expect_error([&] { load_llamagen_transformer(backbone, head, missing); },
                        {"layers.0.ffn_norm.weight"});
  std::map<std::string, at::Tensor> no_head = model.all();
  no_head.erase("output.weight");
  testing::expect_error([&] { load_llamagen_transformer(backbone, head, no_head); },
                        {"'output.weight'"});
  EXPECT_TRUE(at::equal(backbone.state_dict().at("word_embed.weight"), before));

  std::map<std::string, std::string> metadata = model.metadata();
  metadata["gpt.rope"] = "1d";
  testing::expect_error([&] { llamagen_architecture_from_metadata(metadata); },
                        {"gpt.rope is '1d'"});
}

}  // namespace
}  // namespace tessera
