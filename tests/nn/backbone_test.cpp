// Backbone behaviour: KV-cache decoding against one full forward, what the mask hides, closed-form
// parameter and FLOP counts, guidance batching, condition dropout, bf16 autocast.

#include "tessera/nn/backbone.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "tessera/attention/block_mask.h"
#include "tessera/attention/token_layout.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/nn/autocast.h"
#include "tessera/nn/guidance_batch.h"

namespace tessera {
namespace {

// Re-draws every parameter so that each part of the computation shows in the outputs (fresh
// initialisation makes AdaLN blocks near-identity on purpose).
void randomize(Backbone& backbone, uint64_t seed) {
  at::NoGradGuard no_grad;
  at::Generator gen = make_cpu_generator(seed);
  for (at::Tensor& p : backbone.parameters()) {
    p.copy_(at::empty(p.sizes(), at::kFloat).normal_(0.0, 0.3, gen));
  }
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// max |a − b| / max |b|: the error at the output's own scale (float32 rounding of the residual
// stream grows with its magnitude, which random parameters make large).
double scaled_max_diff(const at::Tensor& a, const at::Tensor& b) {
  return max_abs_diff(a, b) / b.to(at::kDouble).abs().max().item<double>();
}

double relative_error(const at::Tensor& out, const at::Tensor& ref) {
  const at::Tensor o = out.to(at::kDouble), r = ref.to(at::kDouble);
  return (o - r).norm().item<double>() / r.norm().item<double>();
}

// LlamaGen-like: class token prefix, token ids, RMSNorm, SwiGLU, 2D RoPE on a 4x4 grid.
BackboneConfig raster_config() {
  BackboneConfig c = llamagen_style_config(/*width=*/64, /*depth=*/2, /*num_heads=*/2,
                                           /*grid=*/4, /*vocab_size=*/50, /*num_classes=*/10);
  c.dropout = 0;
  c.embedding_dropout = 0;
  c.condition_dropout = 0;
  return c;
}

// VAR-like: AdaLN, q/k L2 norm, level embeddings, pyramid 1,2,3,4 (30 tokens).
BackboneConfig pyramid_config(bool shared_adaln = false) {
  BackboneConfig c = var_style_config(/*width=*/64, /*depth=*/2, /*num_heads=*/2, {1, 2, 3, 4},
                                      /*vae_channels=*/8, /*num_classes=*/10, shared_adaln);
  c.condition_dropout = 0;
  return c;
}

// Decodes a causal sequence with a KV cache in steps of uneven sizes (the condition rows alone,
// then 3 rows, then one row at a time) and compares every step with one full forward.
void expect_causal_decoding_matches_full_forward(Backbone& backbone, int64_t vocab_size) {
  backbone.set_training(false);
  const int64_t batch = 3, length = backbone.max_length();
  const int64_t prefix = backbone.config().condition_tokens;
  at::Generator gen = make_cpu_generator(3);
  const at::Tensor tokens = at::randint(0, vocab_size, {batch, length - prefix}, gen);
  const at::Tensor labels =
      at::tensor(std::vector<int64_t>{0, 4, backbone.null_class()}, at::kLong);
  const BlockMask full_mask = BlockMask::causal(length);
  at::Tensor full;
  {
    at::NoGradGuard no_grad;
    full = backbone.forward(tokens, labels, full_mask).hidden;
  }
  ASSERT_EQ(full.sizes(), (at::IntArrayRef{batch, length, backbone.width()}));

  KVCache cache = backbone.make_kv_cache(batch);
  std::vector<std::pair<int64_t, int64_t>> steps = {{0, prefix}, {prefix, prefix + 3}};
  for (int64_t p = prefix + 3; p < length; ++p) steps.emplace_back(p, p + 1);
  for (const auto& [begin, end] : steps) {
    // Row p >= prefix holds token p − prefix; condition rows take no input.
    const at::Tensor step_inputs =
        begin == 0 ? at::Tensor() : tokens.slice(1, begin - prefix, end - prefix);
    const at::Tensor out =
        backbone.forward(step_inputs, labels, full_mask.rows(begin, end), {.cache = &cache}).hidden;
    EXPECT_LT(scaled_max_diff(out, full.slice(1, begin, end)), 1e-5)
        << "rows " << begin << ".." << end;
    EXPECT_EQ(cache.length(), end);
  }
  // causal_tail gives the same step mask.
  cache.truncate(length - 1);
  const at::Tensor last = backbone
                              .forward(tokens.slice(1, length - 1 - prefix, length - prefix),
                                       labels, BlockMask::causal_tail(1, length), {.cache = &cache})
                              .hidden;
  EXPECT_LT(scaled_max_diff(last, full.slice(1, length - 1, length)), 1e-5);
}

TEST(BackboneTest, CausalKvCacheDecodingMatchesFullForward) {
  // LlamaGen-style: class token, RMSNorm, SwiGLU, 2D RoPE with a zero rotation on the prefix.
  Backbone llamagen(raster_config(), 1);
  randomize(llamagen, 2);
  expect_causal_decoding_matches_full_forward(llamagen, 50);

  // The other options: two condition tokens, 1D RoPE with an identity prefix rotation,
  // sinusoidal and level embeddings, affine LayerNorm, GELU, a fused qkv bias, an explicit softmax
  // scale, shared AdaLN and an AdaLN final norm.
  BackboneConfig c;
  c.width = 64;
  c.depth = 2;
  c.num_heads = 2;
  c.segments = {2, 5, 7};
  c.input = InputKind::token_ids;
  c.vocab_size = 20;
  c.norm = NormKind::layer_norm;
  c.norm_affine = true;
  c.mlp = MlpKind::gelu;
  c.mlp_hidden = 96;
  c.qkv_bias = QkvBias::all;
  c.softmax_scale = 0.3;
  c.num_classes = 5;
  c.condition_tokens = 2;
  c.adaln = AdaLnKind::shared;
  c.absolute_positions = AbsolutePositions::sinusoidal;
  c.level_embedding = true;
  c.rope = RopeKind::rope_1d;
  c.rope_prefix = PrefixRotation::identity;
  c.final_norm = FinalNorm::adaln;
  Backbone other(c, 3);
  randomize(other, 4);
  expect_causal_decoding_matches_full_forward(other, 20);
}

TEST(BackboneTest, ExplicitPositionsRunAGatheredSubset) {
  // MAR's encoder runs on the buffer and the unmasked tokens only. Running the gathered subset
  // with explicit positions must equal running the whole sequence with a mask that shows every
  // row only the subset's keys.
  BackboneConfig c = mar_style_config(/*width=*/32, /*depth=*/2, /*num_heads=*/2,
                                      /*num_tokens=*/12, /*token_channels=*/4, /*num_classes=*/5,
                                      /*buffer_size=*/3);
  c.condition_dropout = 0;
  Backbone backbone(c, 30);
  randomize(backbone, 31);
  backbone.set_training(false);
  at::NoGradGuard no_grad;
  at::Generator gen = make_cpu_generator(32);
  const at::Tensor inputs = at::empty({2, 15, 4}).normal_(0.0, 1.0, gen);  // rows 0..2: buffer
  const at::Tensor labels = at::tensor(std::vector<int64_t>{1, 5}, at::kLong);
  const at::Tensor subset = at::tensor(std::vector<int64_t>{0, 1, 2, 4, 7, 8, 13}, at::kLong);
  at::Tensor allowed = at::zeros({15, 15}, at::kBool);
  allowed.index_fill_(1, subset, true);
  const at::Tensor full = backbone.forward(inputs, labels, BlockMask::from_dense(allowed))
                              .hidden.index_select(1, subset);
  const at::Tensor gathered = inputs.index_select(1, subset);
  const at::Tensor shared_positions =
      backbone.forward(gathered, labels, BlockMask::bidirectional(7), {.positions = subset}).hidden;
  EXPECT_LT(scaled_max_diff(shared_positions, full), 1e-5);
  const at::Tensor per_sample = backbone
                                    .forward(gathered, labels, BlockMask::bidirectional(7),
                                             {.positions = subset.unsqueeze(0).expand({2, 7})})
                                    .hidden;
  EXPECT_LT(scaled_max_diff(per_sample, full), 1e-5);
}

TEST(BackboneTest, BlockCausalKvCacheDecodingMatchesFullForward) {
  for (bool shared : {false, true}) {
    Backbone backbone(pyramid_config(shared), 5);
    randomize(backbone, 6);
    backbone.set_training(false);
    const TokenLayout& layout = backbone.layout();
    const int64_t batch = 2;
    at::Generator gen = make_cpu_generator(7);
    const at::Tensor inputs =
        at::empty({batch, layout.length() - 1, 8}).normal_(0.0, 1.0, gen);  // VAR: no first scale
    const at::Tensor labels = at::tensor(std::vector<int64_t>{3, 10}, at::kLong);
    const BlockMask full_mask = BlockMask::block_causal(layout);
    at::Tensor full;
    {
      at::NoGradGuard no_grad;
      full = backbone.forward(inputs, labels, full_mask).hidden;
    }
    KVCache cache = backbone.make_kv_cache(batch);
    for (int64_t s = 0; s < layout.num_segments(); ++s) {
      const int64_t begin = layout.segment_begin(s), end = layout.segment_end(s);
      const at::Tensor step_inputs = s == 0 ? at::Tensor() : inputs.slice(1, begin - 1, end - 1);
      const at::Tensor out =
          backbone.forward(step_inputs, labels, full_mask.rows(begin, end), {.cache = &cache})
              .hidden;
      EXPECT_LT(scaled_max_diff(out, full.slice(1, begin, end)), 1e-5)
          << "scale " << s << (shared ? " (shared AdaLN)" : "");
    }
    EXPECT_EQ(cache.length(), layout.length());
    EXPECT_EQ(cache.memory_bytes(), 2 * 2 * batch * 2 * layout.length() * 32 * 4);
  }
}

TEST(BackboneTest, HiddenTokensDoNotChangeAnOutputVisibleOnesDo) {
  at::NoGradGuard no_grad;
  Backbone backbone(pyramid_config(), 8);
  randomize(backbone, 9);
  backbone.set_training(false);
  const TokenLayout& layout = backbone.layout();
  at::Generator gen = make_cpu_generator(10);
  const at::Tensor inputs = at::empty({1, layout.length() - 1, 8}).normal_(0.0, 1.0, gen);
  const at::Tensor labels = at::tensor(std::vector<int64_t>{2}, at::kLong);
  const BlockMask mask = BlockMask::block_causal(layout);
  const at::Tensor base = backbone.forward(inputs, labels, mask).hidden;

  // Change the first token of scale 2 (sequence position 5; input row 4).
  const int64_t changed_position = layout.segment_begin(2);
  at::Tensor changed = inputs.clone();
  changed[0][changed_position - 1].add_(1.0);
  const at::Tensor out = backbone.forward(changed, labels, mask).hidden;
  for (int64_t q = 0; q < layout.length(); ++q) {
    const double diff = max_abs_diff(out.select(1, q), base.select(1, q));
    if (mask.allowed(q, changed_position)) {
      EXPECT_GT(diff, 1e-4) << "position " << q << " sees the change";
    } else {
      EXPECT_LT(diff, 1e-6) << "position " << q << " must not see the change";
    }
  }

  // Causal: a later token is invisible, an earlier one visible.
  Backbone raster(raster_config(), 11);
  randomize(raster, 12);
  raster.set_training(false);
  const at::Tensor tokens = at::randint(0, 50, {1, 15}, gen);
  const at::Tensor causal_base = raster.forward(tokens, labels, BlockMask::causal(16)).hidden;
  at::Tensor later = tokens.clone();
  later[0][9].fill_((later[0][9].item<int64_t>() + 1) % 50);  // sequence position 10
  const at::Tensor causal_out = raster.forward(later, labels, BlockMask::causal(16)).hidden;
  EXPECT_LT(max_abs_diff(causal_out.slice(1, 0, 10), causal_base.slice(1, 0, 10)), 1e-6);
  EXPECT_GT(max_abs_diff(causal_out.select(1, 10), causal_base.select(1, 10)), 1e-4);
  EXPECT_GT(max_abs_diff(causal_out.select(1, 15), causal_base.select(1, 15)), 1e-4);
}

TEST(BackboneTest, ParameterCountsMatchClosedForm) {
  {
    // VAR-style: C = 64, depth 2, heads 2, Cvae 8, 10 classes, pyramid 1,2,3,4 (L = 30, 4 scales).
    const int64_t C = 64, D = 2, H = 2, Cv = 8, K = 10, L = 30, S = 4, M = 4 * C;
    const int64_t per_block = (6 * C * C + 6 * C)           // ada_lin.1
                              + 3 * C * C + C + C + H       // mat_qkv, q_bias, v_bias, scale_mul
                              + C * C + C                   // proj
                              + (C * M + M) + (M * C + C);  // fc1, fc2
    const int64_t expected = (Cv * C + C)                   // word_embed
                             + (K + 1) * C                  // class_emb (null class)
                             + 1 * C                        // pos_start
                             + L * C                        // pos_1LC
                             + S * C                        // lvl_embed
                             + D * per_block;
    Backbone backbone(pyramid_config(), 0);
    EXPECT_EQ(backbone.num_parameters(), expected);
  }
  {
    // LlamaGen-style: C = 64, depth 2, V = 50, 10 classes, SwiGLU hidden find_multiple(170, 256).
    const int64_t C = 64, D = 2, V = 50, K = 10, M = 256;
    const int64_t per_block = 2 * C                // attention_norm, ffn_norm weights
                              + 3 * C * C + C * C  // wqkv, wo (no biases)
                              + 3 * C * M;         // w1, w3, w2
    const int64_t expected = V * C + (K + 1) * C + D * per_block + C;  // + final norm
    Backbone backbone(raster_config(), 0);
    EXPECT_EQ(backbone.config().resolved_mlp_hidden(), M);
    EXPECT_EQ(backbone.num_parameters(), expected);
  }
}

// BackboneConfig::parameter_count() counts without building; here it must equal the built
// module's count for every preset style and each option that adds or removes parameters.
TEST(BackboneTest, ParameterCountFromTheConfigMatchesTheBuiltModule) {
  std::vector<std::pair<std::string, BackboneConfig>> configs = {
      {"var", pyramid_config()},
      {"llamagen", raster_config()},
      {"maskgit", maskgit_style_config(64, 2, 2, 16, 33, 10)},
      {"mar", mar_style_config(64, 2, 2, 16, 9, 10, 4)},
      {"mar decoder", mar_decoder_config(64, 1, 2, 16, 32, 4)},
  };
  auto variant = [&](const std::string& name, auto change) {
    BackboneConfig c = pyramid_config();
    change(c);
    configs.emplace_back(name, c);
  };
  variant("shared adaln", [](BackboneConfig& c) { c.adaln = AdaLnKind::shared; });
  variant("no adaln, affine norms", [](BackboneConfig& c) {
    c.adaln = AdaLnKind::none;
    c.norm_affine = true;
  });
  variant("rms norm, final norm", [](BackboneConfig& c) {
    c.adaln = AdaLnKind::none;
    c.norm = NormKind::rms_norm;
    c.norm_affine = true;
    c.final_norm = FinalNorm::norm;
  });
  variant("final adaln", [](BackboneConfig& c) { c.final_norm = FinalNorm::adaln; });
  variant("qkv bias all, no l2", [](BackboneConfig& c) {
    c.qkv_bias = QkvBias::all;
    c.qk_l2_norm = false;
  });
  variant("no biases", [](BackboneConfig& c) {
    c.qkv_bias = QkvBias::none;
    c.proj_bias = false;
    c.mlp_bias = false;
    c.input_bias = false;
  });
  variant("swiglu 96", [](BackboneConfig& c) {
    c.mlp = MlpKind::swiglu;
    c.mlp_hidden = 96;
  });
  variant("sinusoidal, no levels, no pos_start", [](BackboneConfig& c) {
    c.absolute_positions = AbsolutePositions::sinusoidal;
    c.level_embedding = false;
    c.condition_token_embedding = false;
  });
  for (const auto& [name, config] : configs) {
    Backbone backbone(config, 0);
    EXPECT_EQ(config.parameter_count(), backbone.num_parameters()) << name;
  }
}

TEST(BackboneTest, ForwardFlopsMatchClosedForm) {
  Backbone backbone(pyramid_config(), 0);
  const int64_t C = 64, M = 256, Cv = 8, depth = 2;
  const BlockMask mask = BlockMask::block_causal(backbone.layout());
  const double tokens = 30;
  double visible = 0;  // block-causal over 1,4,9,16: row of segment s sees the first s+1 segments
  const std::vector<double> seg = {1, 4, 9, 16};
  double prefix = 0;
  for (double s : seg) {
    prefix += s;
    visible += s * prefix;
  }
  const double per_token = 2.0 * Cv * C + depth * (2.0 * 4 * C * C + 2.0 * 2 * C * M);
  const double expected = tokens * per_token + depth * 4.0 * C * visible + depth * 2.0 * C * 6 * C;
  EXPECT_DOUBLE_EQ(backbone.forward_flops(mask), expected);
  EXPECT_DOUBLE_EQ(backbone.forward_flops_per_token(10), per_token + depth * 4.0 * C * 10);
}

TEST(BackboneTest, GuidanceBatchHalvesMatchSeparateForwards) {
  at::NoGradGuard no_grad;
  Backbone backbone(pyramid_config(), 13);
  randomize(backbone, 14);
  backbone.set_training(false);
  at::Generator gen = make_cpu_generator(15);
  const at::Tensor inputs = at::empty({2, 29, 8}).normal_(0.0, 1.0, gen);
  const at::Tensor labels = at::tensor(std::vector<int64_t>{1, 7}, at::kLong);
  const BlockMask mask = BlockMask::block_causal(backbone.layout());

  const at::Tensor doubled_labels = guidance_labels(labels, backbone.null_class());
  EXPECT_TRUE(at::equal(doubled_labels, at::tensor(std::vector<int64_t>{1, 7, 10, 10}, at::kLong)));
  const BackboneOutput both = backbone.forward(repeat_for_guidance(inputs), doubled_labels, mask);
  const GuidanceHalves halves = split_guidance_halves(both.hidden);
  const at::Tensor cond = backbone.forward(inputs, labels, mask).hidden;
  const at::Tensor uncond =
      backbone.forward(inputs, at::full({2}, backbone.null_class(), at::kLong), mask).hidden;
  EXPECT_LT(scaled_max_diff(halves.conditional, cond), 1e-5);
  EXPECT_LT(scaled_max_diff(halves.unconditional, uncond), 1e-5);
  EXPECT_TRUE(
      at::equal(join_guidance_halves(halves.conditional, halves.unconditional), both.hidden));
  EXPECT_THROW(split_guidance_halves(at::zeros({3, 2})), Error);
}

TEST(BackboneTest, ConditionDropoutReplacesLabelsByTheNullClass) {
  BackboneConfig config = pyramid_config();
  config.condition_dropout = 0.5;
  Backbone backbone(config, 16);
  const at::Tensor labels = at::arange(0, 10, at::kLong).repeat({4});  // 40 labels
  const at::Tensor inputs = at::zeros({40, 29, 8});
  const BlockMask mask = BlockMask::block_causal(backbone.layout());
  at::NoGradGuard no_grad;
  // Evaluation: no dropout.
  backbone.set_training(false);
  const BackboneOutput eval = backbone.forward(inputs, labels, mask);
  const at::Tensor table = backbone.state_dict().at("class_emb.weight");
  EXPECT_TRUE(at::equal(eval.condition, table.index_select(0, labels)));
  // Training: every row is its label's embedding or the null class's, and both occur.
  backbone.set_training(true);
  const BackboneOutput train =
      backbone.forward(inputs, labels, mask, {.generator = make_cpu_generator(17)});
  int64_t dropped = 0;
  for (int64_t i = 0; i < 40; ++i) {
    const bool kept = at::equal(train.condition[i], table[labels[i].item<int64_t>()]);
    const bool null = at::equal(train.condition[i], table[10]);
    EXPECT_TRUE(kept || null) << "row " << i;
    dropped += null ? 1 : 0;
  }
  EXPECT_GT(dropped, 5);
  EXPECT_LT(dropped, 35);
}

TEST(BackboneTest, Bf16AutocastOnCpuStaysCloseToFloat32) {
  at::NoGradGuard no_grad;
  Backbone backbone(pyramid_config(), 18);
  randomize(backbone, 19);
  backbone.set_training(false);
  at::Generator gen = make_cpu_generator(20);
  const at::Tensor inputs = at::empty({2, 29, 8}).normal_(0.0, 1.0, gen);
  const at::Tensor labels = at::tensor(std::vector<int64_t>{0, 5}, at::kLong);
  const BlockMask mask = BlockMask::block_causal(backbone.layout());
  const at::Tensor fp32 = backbone.forward(inputs, labels, mask).hidden;
  at::Tensor bf16;
  {
    AutocastGuard autocast(at::kCPU);
    bf16 = backbone.forward(inputs, labels, mask).hidden;
    // KV-cache decoding under autocast too (bf16 keys in a float32 cache).
    KVCache cache = backbone.make_kv_cache(2);
    const at::Tensor first =
        backbone.forward({}, labels, mask.rows(0, 1), {.cache = &cache}).hidden;
    EXPECT_LT(relative_error(first, fp32.slice(1, 0, 1)), 5e-2);
  }
  const double err = relative_error(bf16, fp32);
  EXPECT_GT(err, 0.0) << "autocast did not change the arithmetic";
  EXPECT_LT(err, 5e-2);
}

TEST(BackboneTest, TrainingForwardIsDifferentiable) {
  BackboneConfig config = raster_config();
  config.drop_path = 0.2;
  config.dropout = 0.1;
  Backbone backbone(config, 21);
  backbone.set_training(true);
  const at::Tensor tokens = at::randint(0, 50, {2, 15});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{1, 2}, at::kLong);
  const at::Tensor hidden = backbone.forward(tokens, labels, BlockMask::causal(16)).hidden;
  hidden.pow(2).mean().backward();
  int64_t with_grad = 0;
  for (const auto& p : backbone.parameters()) with_grad += p.grad().defined() ? 1 : 0;
  EXPECT_EQ(with_grad, static_cast<int64_t>(backbone.parameters().size()));
}

// Every training draw (dropout, embedding dropout, drop path, condition dropout) comes from the
// call's generator: the same seed repeats a training forward bit for bit, another seed does not,
// and the dropout rate is the configured one.
TEST(BackboneTest, TrainingDrawsComeFromTheCallsGenerator) {
  BackboneConfig config = raster_config();
  config.drop_path = 0.2;
  config.dropout = 0.3;
  config.embedding_dropout = 0.1;
  Backbone backbone(config, 21);
  backbone.set_training(true);
  const at::Tensor tokens = at::randint(0, 50, {4, 15}, make_cpu_generator(2));
  const at::Tensor labels = at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong);
  auto forward = [&](uint64_t seed) {
    BackboneForwardOptions options;
    options.generator = make_cpu_generator(seed);
    return backbone.forward(tokens, labels, BlockMask::causal(16), options).hidden;
  };
  const at::Tensor a = forward(7);
  at::manual_seed(123);  // the global generator must not matter
  EXPECT_TRUE(at::equal(forward(7), a));
  EXPECT_FALSE(at::allclose(forward(8), a));
  backbone.set_training(false);
  const at::Tensor eval = forward(7);
  EXPECT_TRUE(at::equal(forward(8), eval));  // inference draws nothing
}

TEST(BackboneTest, RejectsInputsAndMasksThatDoNotFit) {
  Backbone backbone(pyramid_config(), 0);
  const at::Tensor labels = at::tensor(std::vector<int64_t>{0}, at::kLong);
  const BlockMask mask = BlockMask::block_causal(backbone.layout());
  // Wrong channel count, wrong row count, out-of-range label.
  EXPECT_THROW(backbone.forward(at::zeros({1, 29, 7}), labels, mask), Error);
  EXPECT_THROW(backbone.forward(at::zeros({1, 20, 8}), labels, mask), Error);
  EXPECT_THROW(backbone.forward(at::zeros({1, 29, 8}), at::full({1}, 11, at::kLong), mask), Error);
  // A step whose rows see keys the cache does not hold yet.
  KVCache cache = backbone.make_kv_cache(1);
  try {
    backbone.forward(at::zeros({1, 4, 8}), labels, BlockMask::bidirectional(30).rows(1, 5),
                     {.cache = &cache, .begin = 0});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
  }
  KVCache cache2 = backbone.make_kv_cache(1);
  EXPECT_THROW(
      backbone.forward({}, labels, BlockMask::bidirectional(30).rows(0, 1), {.cache = &cache2}),
      Error);
  // Invalid configs name the field.
  BackboneConfig bad = pyramid_config();
  bad.num_heads = 3;
  EXPECT_THROW(Backbone(bad, 0), Error);
}

}  // namespace
}  // namespace tessera
