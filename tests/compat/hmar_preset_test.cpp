// HMAR presets (Note [HMAR presets]): the named presets have the reference module's exact size;
// HMAR's own state-dict layout (the key list of NVlabs/HMAR's build_vae_hmar(depth=16), in
// tests/compat/data) maps onto the preset's parts key for key and shape for shape; and, on the
// VAR fixture rearranged into HMAR's layout (HMAR's next-scale path is VAR's network, its masked
// path the same with the mask blocks and head), the next-scale pass reproduces the reference
// logits and the masked pass equals VAR's network with the mask tail put in its place.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "common/reference_key_list.h"
#include "common/relative_error.h"
#include "common/source_paths.h"
#include "tessera/compat/presets.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/head/discrete_head.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/backbone.h"
#include "tessera/pipeline/generator.h"
#include "tessera/schedule/hmar_schedule.h"

namespace tessera {
namespace {

using testing::parity_dir;

TEST(HmarPresets, SizesAreTheReferenceModules) {
  // NVlabs/HMAR's build_vae_hmar(depth) instantiated: both tails, both heads, mask_embed.
  const std::map<std::string, int64_t> reference = {{"hmar-d16", 467'691'904},
                                                    {"hmar-d20", 845'517'872},
                                                    {"hmar-d24", 1'384'328'960},
                                                    {"hmar-d30", 2'556'324'212}};
  for (const auto& [name, count] : reference) {
    const GeneratorPreset p = generator_preset(name);
    EXPECT_EQ(transformer_parameter_count(p.generator), count) << name;
    const int64_t d = p.generator.backbone.depth;
    EXPECT_EQ(p.generator.backbone.width, 64 * d) << name;
    EXPECT_EQ(p.generator.backbone.num_heads, d) << name;
    EXPECT_EQ(p.generator.backbone.branch_blocks, 8) << name;
    EXPECT_EQ(p.generator.schedule.kind, ScheduleKind::hmar) << name;
    // HMAR's default mask schedule: only the 2x2 and 3x3 scales are refined.
    EXPECT_EQ(p.generator.schedule.hmar.sampling.mask_schedule[1], (std::vector<int64_t>{1, 3}))
        << name;
    EXPECT_EQ(p.generator.schedule.hmar.sampling.mask_schedule[2],
              (std::vector<int64_t>{1, 1, 2, 5}))
        << name;
    EXPECT_EQ(p.generator.schedule.hmar.sampling.mask_schedule[9], (std::vector<int64_t>{256}))
        << name;
  }
  EXPECT_DOUBLE_EQ(generator_preset("hmar-d20").generator.sampling.guidance.scale, 1.9);
  EXPECT_EQ(generator_preset("hmar-d24").generator.sampling.head.discrete.top_k, 900);
}

TEST(HmarPresets, ReferenceKeysMapOntoThePresetsPartsExactly) {
  const std::map<std::string, at::Tensor> reference =
      testing::reference_key_list("hmar_d16_state_dict.txt");
  ASSERT_EQ(reference.size(), 329u);
  const GeneratorPreset p = generator_preset("hmar-d16");
  const HmarStateDicts parts = hmar_state_dicts(reference, 16 - 8);
  EXPECT_EQ(parts.derived.size(), 2u);
  // The preset's parts, built: every key of each is given, with its shape, and nothing else.
  Backbone backbone(p.generator.backbone, 0);
  auto head = make_head(p.generator.head, 0);
  auto refinement = make_head(*p.generator.refinement_head, 0);
  const auto same_keys_and_shapes = [](const std::map<std::string, at::Tensor>& model,
                                       const std::map<std::string, at::Tensor>& given,
                                       const char* what) {
    for (const auto& [key, t] : model) {
      const auto it = given.find(key);
      if (it == given.end()) {
        ADD_FAILURE() << what << ": " << key << " not given by the reference";
      } else {
        EXPECT_EQ(it->second.sizes(), t.sizes()) << what << ": " << key;
      }
    }
    for (const auto& [key, t] : given)
      EXPECT_TRUE(model.contains(key)) << what << ": reference key maps to unknown " << key;
  };
  same_keys_and_shapes(backbone.state_dict(), parts.backbone, "backbone");
  same_keys_and_shapes(head->state_dict(), parts.head, "ns head");
  same_keys_and_shapes(refinement->state_dict(), parts.refinement_head, "mask head");
  EXPECT_EQ(parts.backbone.size() + parts.head.size() + parts.refinement_head.size() +
                parts.derived.size() + 1,  // word_embed.weight and mask_embed.weight become one
            reference.size());
  EXPECT_NE(testing::error_message_of([&] {
              auto without = reference;
              without.erase("mask_embed.weight");
              hmar_state_dicts(without, 8);
            }).find("'mask_embed.weight'"),
            std::string::npos);
}

// The VAR fixture's transformer in HMAR's layout with a one-block tail: base_blocks.0 = blocks.0,
// ns_blocks.0 = blocks.1, ns_head = head; mask_blocks.0, mask_head and mask_embed drawn at random.
std::map<std::string, at::Tensor> var_fixture_as_hmar(const std::map<std::string, at::Tensor>& var,
                                                      int64_t depth) {
  at::Generator gen = make_cpu_generator(21);
  const auto drawn = [&](const at::Tensor& like) {
    return at::empty(like.sizes(), at::kFloat).normal_(0.0, 0.05, gen) + like;
  };
  std::map<std::string, at::Tensor> out;
  const std::string last = "blocks." + std::to_string(depth - 1) + ".";
  for (const auto& [key, t] : var) {
    if (key.starts_with(last)) {
      out["ns_blocks.0." + key.substr(last.size())] = t;
      out["mask_blocks.0." + key.substr(last.size())] = key.ends_with("zero_k_bias") ? t : drawn(t);
    } else if (key.starts_with("blocks.")) {
      out["base_blocks." + key.substr(7)] = t;
    } else if (key.starts_with("head_nm.") || key.starts_with("head.")) {
      out["ns_" + key] = t;
      out["mask_" + key] = drawn(t);
    } else if (key == "word_embed.bias") {
      out["word_embed_bias"] = t;
    } else {
      out[key] = t;
    }
  }
  out["mask_embed.weight"] = at::empty({1, var.at("word_embed.weight").size(0)}).normal_(0, 1, gen);
  return out;
}

using testing::relative_error;

at::Tensor logits_of(Backbone& backbone, Head& head, const at::Tensor& inputs,
                     const at::Tensor& labels, bool branch) {
  BackboneForwardOptions fo;
  fo.branch = branch;
  const BackboneOutput out =
      backbone.forward(inputs, labels, BlockMask::block_causal(backbone.layout()), fo);
  const int64_t B = out.hidden.size(0), L = out.hidden.size(1);
  return dynamic_cast<DiscreteHead&>(head)
      .logits(out.hidden.reshape({B * L, backbone.width()}), out.condition.repeat_interleave(L, 0))
      .view({B, L, -1});
}

TEST(HmarPresets, FixtureInHmarLayoutRunsBothPaths) {
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors", "var.safetensors", "vqvae.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const std::map<std::string, at::Tensor> var =
      SafetensorsFile::open(dir / "var.safetensors").all();
  const VarArchitecture a = var_architecture_from_metadata(io.metadata());
  const std::map<std::string, at::Tensor> hmar = var_fixture_as_hmar(var, a.depth);

  Generator generator = build_preset_generator(hmar_generator_preset(a, /*tail_blocks=*/1),
                                               {.tokenizer = dir / "vqvae.safetensors"});
  load_hmar_transformer(generator, hmar);
  generator.set_training(false);
  at::NoGradGuard no_grad;
  // The mask token is the input projection's indicator column.
  EXPECT_TRUE(
      at::equal(generator.backbone().state_dict().at("word_embed.weight").select(1, a.vae_channels),
                hmar.at("mask_embed.weight")[0]));

  // Next-scale path (indicator 0) = VAR's network: the reference logits.
  const at::Tensor x = io.tensor("var_input"), labels = io.tensor("label").to(at::kLong);
  const at::Tensor x0 = at::cat({x, at::zeros({x.size(0), x.size(1), 1})}, -1);
  const double ns_error = relative_error(
      logits_of(generator.backbone(), generator.head(), x0, labels, false), io.tensor("logits"));
  std::printf("HMAR next-scale path on the VAR fixture: relative error %.3g\n", ns_error);
  EXPECT_LT(ns_error, 1e-4);

  // Masked path = VAR's network with blocks.{d-1} := mask_blocks.0 and the mask head.
  const GeneratorPreset vp = var_generator_preset(a);
  Backbone swapped(vp.generator.backbone, 0);
  auto mask_head = make_head(vp.generator.head, 0);
  std::map<std::string, at::Tensor> swapped_tensors, mask_head_tensors;
  const std::string last = "blocks." + std::to_string(a.depth - 1) + ".";
  for (const auto& [key, t] : var) {
    if (key.starts_with("head.") || key.starts_with("head_nm.")) {
      mask_head_tensors[key] = hmar.at("mask_" + key);
    } else if (key.starts_with(last)) {
      swapped_tensors[key] = hmar.at("mask_blocks.0." + key.substr(last.size()));
    } else {
      swapped_tensors[key] = t;
    }
  }
  swapped.load_state_dict(swapped_tensors);
  mask_head->load_state_dict(mask_head_tensors);
  swapped.set_training(false);
  mask_head->set_training(false);
  const at::Tensor branch_logits =
      logits_of(generator.backbone(), *generator.refinement_head(), x0, labels, true);
  const at::Tensor expected = logits_of(swapped, *mask_head, x, labels, false);
  EXPECT_LT(relative_error(branch_logits, expected), 1e-5);
  EXPECT_GT(relative_error(branch_logits, io.tensor("logits")), 1e-3);  // a different network
}

// HMAR's default mask_schedule (utils/sampling_arg_util.py at 595a9df) over its pyramid 1, 2, 3,
// 4, 5, 6, 8, 10, 13, 16: [[1], [1, 3], [1, 1, 2, 5], [16], [25], [36], [64], [100], [169], [256]],
// here keyed by a scale's token count so that it applies to the fixture's own pyramid. Only the
// 2x2 and 3x3 scales are refined; any other scale (one HMAR's list lacks too) is one step.
std::vector<int64_t> hmar_default_mask_steps(int64_t tokens) {
  const std::map<int64_t, std::vector<int64_t>> reference = {
      {1, {1}},   {4, {1, 3}}, {9, {1, 1, 2, 5}}, {16, {16}},   {25, {25}},
      {36, {36}}, {64, {64}},  {100, {100}},      {169, {169}}, {256, {256}}};
  const auto it = reference.find(tokens);
  return it != reference.end() ? it->second : std::vector<int64_t>{tokens};
}

TEST(HmarPresets, SamplingFollowsHmarsMaskScheduleWithTheMaskTail) {
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors", "var.safetensors", "vqvae.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const std::map<std::string, at::Tensor> var =
      SafetensorsFile::open(dir / "var.safetensors").all();
  const VarArchitecture a = var_architecture_from_metadata(io.metadata());
  Generator generator =
      build_preset_generator(hmar_generator_preset(a, 1), {.tokenizer = dir / "vqvae.safetensors"});
  load_hmar_transformer(generator, var_fixture_as_hmar(var, a.depth));
  auto& schedule = dynamic_cast<HmarSchedule&>(generator.schedule());
  // HMAR's mask_schedule on the fixture's pyramid (on var-tiny's 1, 2, 3, 4: [[1], [1, 3],
  // [1, 1, 2, 5], [16]]), and the masked count after each of a scale's steps: its tokens less
  // those committed so far (var-tiny: [0], [3, 0], [8, 7, 5, 0], [0]).
  std::vector<std::vector<int64_t>> expected_schedule, expected_masked;
  size_t first_refined = a.patch_nums.size();
  for (const int64_t pn : a.patch_nums) {
    expected_schedule.push_back(hmar_default_mask_steps(pn * pn));
    std::vector<int64_t> masked;
    int64_t left = pn * pn;
    for (const int64_t committed : expected_schedule.back()) masked.push_back(left -= committed);
    expected_masked.push_back(masked);
    if (masked.size() > 1 && first_refined == a.patch_nums.size()) {
      first_refined = expected_schedule.size() - 1;
    }
  }
  ASSERT_EQ(schedule.config().sampling.mask_schedule, expected_schedule);
  std::map<int64_t, std::vector<int64_t>> masked_after;  // scale -> masked count after each step
  schedule.set_step_observer([&](const ScaleStepRecord& r) {
    masked_after[r.scale].push_back(r.masked[0].sum().item<int64_t>());
  });
  const at::Tensor labels = io.tensor("label").to(at::kLong);
  const Tokens first = generator.sample_tokens(labels, {.seed = 3});
  ASSERT_EQ(first.scales.size(), a.patch_nums.size());
  for (size_t s = 0; s < a.patch_nums.size(); ++s) {
    EXPECT_EQ(masked_after[static_cast<int64_t>(s)], expected_masked[s]) << "scale " << s;
  }

  if (first_refined == a.patch_nums.size()) {
    GTEST_SKIP() << "the fixture's pyramid " << io.metadata().at("patch_nums")
                 << " has no 2x2 or 3x3 scale, the only ones HMAR refines: the mask head's part "
                    "of sampling cannot show";
  }

  // Only refinement reads the mask head: changing it leaves the scales before the first refined
  // one alone and changes what the refinement of that scale (or of one after it) draws.
  schedule.set_step_observer({});
  {
    at::NoGradGuard no_grad;
    for (at::Tensor& p : generator.refinement_head()->parameters()) p.mul_(-3.0);
  }
  const Tokens second = generator.sample_tokens(labels, {.seed = 3});
  bool refined_scales_differ = false;
  for (size_t s = 0; s < a.patch_nums.size(); ++s) {
    const bool same = at::equal(first.scales[s], second.scales[s]);
    if (s < first_refined) {
      EXPECT_TRUE(same) << "scale " << s;
    } else if (!same) {
      refined_scales_differ = true;
    }
  }
  EXPECT_TRUE(refined_scales_differ) << "scales from " << first_refined << " on";
}

TEST(HmarPresets, GeneratorFileKeepsBothTails) {
  // A generator with branch blocks and a refinement head saved and loaded samples the same, and
  // its file holds the refinement head under its own prefix.
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors", "var.safetensors", "vqvae.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const auto var = SafetensorsFile::open(dir / "var.safetensors").all();
  const VarArchitecture a = var_architecture_from_metadata(io.metadata());
  Generator generator =
      build_preset_generator(hmar_generator_preset(a, 1), {.tokenizer = dir / "vqvae.safetensors"});
  load_hmar_transformer(generator, var_fixture_as_hmar(var, a.depth));
  const auto file = std::filesystem::temp_directory_path() / "tessera_hmar_tails.safetensors";
  generator.save(file);
  EXPECT_TRUE(SafetensorsFile::open(file).contains("refinement_head.head.weight"));
  EXPECT_TRUE(SafetensorsFile::open(file).contains("backbone.branch_blocks.0.ffn.fc1.weight"));
  Generator loaded = Generator::load(file);
  std::filesystem::remove(file);
  const at::Tensor labels = io.tensor("label").to(at::kLong);
  const Tokens a_tokens = generator.sample_tokens(labels, {.seed = 9});
  const Tokens b_tokens = loaded.sample_tokens(labels, {.seed = 9});
  for (size_t s = 0; s < a_tokens.scales.size(); ++s)
    EXPECT_TRUE(at::equal(a_tokens.scales[s], b_tokens.scales[s])) << "scale " << s;
  EXPECT_EQ(loaded.num_parameters(), generator.num_parameters());
}

TEST(HmarPresets, MisuseOfTheTailsIsAClearError) {
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors", "var.safetensors", "vqvae.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const VarArchitecture a = var_architecture_from_metadata(io.metadata());
  // The next_scale schedule would leave HMAR's mask tail unused.
  GeneratorPreset p = hmar_generator_preset(a, 1);
  p.generator.schedule.kind = ScheduleKind::next_scale;
  p.generator.backbone.input_channels = a.vae_channels;  // no indicator: only the tail is wrong
  EXPECT_NE(testing::error_message_of([&] {
              build_preset_generator(p, {.tokenizer = dir / "vqvae.safetensors"});
            }).find("only the hmar schedule"),
            std::string::npos);
  // A mask schedule that does not cover a scale's tokens: the last scale's, one token short.
  GeneratorPreset q = hmar_generator_preset(a, 1);
  const size_t last = a.patch_nums.size() - 1;
  const int64_t tokens = a.patch_nums[last] * a.patch_nums[last];
  q.generator.schedule.hmar.sampling.mask_schedule[last] = {1, tokens - 2};
  const std::string expected = "mask_schedule[" + std::to_string(last) + "] = [1, " +
                               std::to_string(tokens - 2) + "] commits " +
                               std::to_string(tokens - 1) + " tokens, but scale " +
                               std::to_string(last) + " has " + std::to_string(tokens);
  const std::string message = testing::error_message_of([&] {
    build_preset_generator(q, {.tokenizer = dir / "vqvae.safetensors"})
        .sample_tokens(io.tensor("label").to(at::kLong).slice(0, 0, 1));
  });
  EXPECT_NE(message.find(expected), std::string::npos) << message;
  HmarScheduleConfig both;
  both.sampling.refinement_steps = {0, 1};
  both.sampling.mask_schedule = {{1}, {1, 3}};
  EXPECT_NE(testing::error_message_of([&] { both.validate(); }).find("not both"),
            std::string::npos);
}

TEST(HmarPresets, AVarCheckpointIsRefusedByName) {
  const auto dir = parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors", "var.safetensors", "vqvae.safetensors");
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const VarArchitecture a = var_architecture_from_metadata(io.metadata());
  Generator generator =
      build_preset_generator(hmar_generator_preset(a, 1), {.tokenizer = dir / "vqvae.safetensors"});
  const auto var = SafetensorsFile::open(dir / "var.safetensors").all();
  const std::string message =
      testing::error_message_of([&] { load_hmar_transformer(generator, var); });
  EXPECT_NE(message.find("mask_embed.weight"), std::string::npos) << message;
}

}  // namespace
}  // namespace tessera
