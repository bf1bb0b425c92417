// Backbone persistence: save/load by name, strict and non-strict loading with reports, errors that
// name the key, and a VAR checkpoint (FoundationVision/VAR's own state dict) loaded directly and
// run against the reference's logits.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/parity_dir.h"
#include "tessera/attention/block_mask.h"
#include "tessera/core/error.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/backbone.h"
#include "tessera/compat/presets.h"

namespace tessera {
namespace {

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("tessera_nn_" + std::to_string(::getpid()) + "_" + name);
}

BackboneConfig small_config() {
  BackboneConfig c = llamagen_style_config(64, 2, 2, 4, 50, 10);
  c.dropout = c.embedding_dropout = c.condition_dropout = 0;
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(BackboneCheckpointTest, SaveAndLoadRoundTrip) {
  Backbone original(small_config(), 1);
  const auto path = temp_path("roundtrip.safetensors");
  original.save(path);
  Backbone loaded = Backbone::from_file(path);
  EXPECT_EQ(config_to_json(loaded.config()), config_to_json(original.config()));
  const auto a = original.state_dict(), b = loaded.state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, tensor] : a) EXPECT_TRUE(at::equal(tensor, b.at(key))) << key;
  // A fresh backbone with another seed differs until it loads the file.
  Backbone other(small_config(), 2);
  EXPECT_FALSE(at::equal(other.state_dict().at("word_embed.weight"), a.at("word_embed.weight")));
  const StateDictLoadReport report = other.load(path);
  EXPECT_TRUE(report.complete());
  EXPECT_EQ(report.loaded.size(), a.size());
  EXPECT_TRUE(at::equal(other.state_dict().at("word_embed.weight"), a.at("word_embed.weight")));
  std::filesystem::remove(path);
}

TEST(BackboneCheckpointTest, MissingKeyOrWrongShapeFailsNamingTheKey) {
  Backbone source(small_config(), 3);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : source.state_dict()) tensors.emplace(key, t.clone());

  Backbone target(small_config(), 4);
  auto missing = tensors;
  missing.erase("blocks.1.attn.mat_qkv.weight");
  const std::string missing_error = error_of([&] { target.load_state_dict(missing); });
  EXPECT_NE(missing_error.find("missing: blocks.1.attn.mat_qkv.weight"), std::string::npos)
      << missing_error;

  auto wrong_shape = tensors;
  wrong_shape["blocks.0.ffn.w2.weight"] = at::zeros({64, 100});
  const std::string shape_error = error_of([&] { target.load_state_dict(wrong_shape); });
  EXPECT_NE(shape_error.find("blocks.0.ffn.w2.weight (model [64, 256], checkpoint [64, 100])"),
            std::string::npos)
      << shape_error;

  auto unexpected = tensors;
  unexpected["blocks.9.attn.proj.weight"] = at::zeros({64, 64});
  const std::string unexpected_error = error_of([&] { target.load_state_dict(unexpected); });
  EXPECT_NE(unexpected_error.find("unexpected: blocks.9.attn.proj.weight"), std::string::npos)
      << unexpected_error;

  // Strict failures copy nothing.
  EXPECT_FALSE(
      at::equal(target.state_dict().at("word_embed.weight"), tensors.at("word_embed.weight")));

  // Non-strict: the rest loads and the report names what did not.
  auto mixed = missing;
  mixed["blocks.0.ffn.w2.weight"] = at::zeros({64, 100});
  mixed["extra"] = at::zeros({1});
  const StateDictLoadReport report = target.load_state_dict(mixed, {.strict = false});
  EXPECT_EQ(report.missing, std::vector<std::string>{"blocks.1.attn.mat_qkv.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra"});
  ASSERT_EQ(report.mismatched.size(), 1u);
  EXPECT_EQ(report.mismatched[0].key, "blocks.0.ffn.w2.weight");
  EXPECT_EQ(report.loaded.size(), tensors.size() - 2);
  EXPECT_TRUE(
      at::equal(target.state_dict().at("word_embed.weight"), tensors.at("word_embed.weight")));
}

TEST(BackboneCheckpointTest, RenamesAndIgnoredPrefixes) {
  Backbone source(small_config(), 5);
  // Write the state dict under LlamaGen's names, plus its output layer.
  std::map<std::string, at::Tensor> llamagen = {
      {"tok_embeddings.weight", source.state_dict().at("word_embed.weight")},
      {"cls_embedding.embedding_table.weight", source.state_dict().at("class_emb.weight")},
      {"norm.weight", source.state_dict().at("norm.weight")},
      {"output.weight", at::zeros({50, 64})}};
  for (int i = 0; i < 2; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".",
                      l = "layers." + std::to_string(i) + ".";
    const auto sd = source.state_dict();
    llamagen[l + "attention.wqkv.weight"] = sd.at(b + "attn.mat_qkv.weight");
    llamagen[l + "attention.wo.weight"] = sd.at(b + "attn.proj.weight");
    llamagen[l + "feed_forward.w1.weight"] = sd.at(b + "ffn.w1.weight");
    llamagen[l + "feed_forward.w2.weight"] = sd.at(b + "ffn.w2.weight");
    llamagen[l + "feed_forward.w3.weight"] = sd.at(b + "ffn.w3.weight");
    llamagen[l + "attention_norm.weight"] = sd.at(b + "norm1.weight");
    llamagen[l + "ffn_norm.weight"] = sd.at(b + "norm2.weight");
  }
  Backbone target(small_config(), 6);
  const StateDictLoadReport report =
      target.load_state_dict(llamagen, {.strict = true,
                                        .ignore_prefixes = {"output."},
                                        .renames = Backbone::llamagen_key_renames()});
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_EQ(report.ignored, std::vector<std::string>{"output.weight"});
  for (const auto& [key, t] : source.state_dict()) {
    EXPECT_TRUE(at::equal(t, target.state_dict().at(key))) << key;
  }
}

// --- VAR
// -------------------------------------------------------------------------------------------

using testing::parity_dir;

TEST(BackboneCheckpointTest, VarCheckpointLoadsDirectlyAndMatchesReferenceLogits) {
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "var.safetensors", "io.safetensors");
  const SafetensorsFile var = SafetensorsFile::open(dir / "var.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  // Every size from the fixture's metadata (depth, width, heads, patch_nums, Cvae, classes,
  // shared_aln, attn_l2_norm, LayerNorm eps), none assumed: a fixture of any size passes.
  const VarArchitecture a = var_architecture_from_metadata(var.metadata());
  BackboneConfig config = var_style_config(a.width, a.depth, a.heads, a.patch_nums, a.vae_channels,
                                           a.num_classes, a.shared_adaln);
  config.qk_l2_norm = a.attn_l2_norm;
  config.norm_eps = a.norm_eps;
  Backbone backbone(config, 0);
  // Everything but the head's part loads by VAR's own names, strictly; VAR's derived buffers are
  // skipped.
  const StateDictLoadReport report = backbone.load_state_dict(
      var.all(), {.strict = true, .ignore_prefixes = {"head.", "head_nm."}});
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_EQ(report.loaded.size(), backbone.state_dict().size());

  backbone.set_training(false);
  at::NoGradGuard no_grad;
  const at::Tensor label = io.tensor("label");
  const BackboneOutput out =
      backbone.forward(io.tensor("var_input"), label, BlockMask::block_causal(backbone.layout()));
  // VAR's get_logits: head(AdaLNBeforeHead(h, cond_BD)), written out here from models/basic_var.py:
  // (scale, shift) = ada_lin(SiLU(c)), LayerNorm(h) without affine · (1 + scale) + shift.
  const int64_t C = a.width;
  const at::Tensor ss = at::linear(at::silu(out.condition), var.tensor("head_nm.ada_lin.1.weight"),
                                   var.tensor("head_nm.ada_lin.1.bias"))
                            .view({-1, 1, 2, C});
  const at::Tensor normed =
      at::layer_norm(out.hidden, {C}, {}, {}, a.norm_eps) * (ss.select(2, 0) + 1) + ss.select(2, 1);
  const at::Tensor logits = at::linear(normed, var.tensor("head.weight"), var.tensor("head.bias"));
  const at::Tensor reference = io.tensor("logits");
  ASSERT_EQ(logits.sizes(), reference.sizes());
  const double rel = (logits.to(at::kDouble) - reference.to(at::kDouble)).norm().item<double>() /
                     reference.to(at::kDouble).norm().item<double>();
  EXPECT_LT(rel, 1e-4);
}

}  // namespace
}  // namespace tessera
