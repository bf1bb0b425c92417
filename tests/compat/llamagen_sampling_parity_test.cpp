// LlamaGen's generate() against the reference fixture (../shared/parity/llamagen-tiny, or
// $TESSERA_PARITY_LLAMAGEN_DIR; README-llamagen.md there): the generator a converted checkpoint
// describes (GPT + VQ tokenizer, the sampling settings of its metadata) with reference seeding
// by the exponential race (torch 2.x's torch.multinomial) draws the reference's tokens exactly,
// through the KV cache and without it; each step's logits and distribution are LlamaGen's
// (guidance u + (c − u)·s, temperature, softmax), and the decoded image is sample_image.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "common/relative_error.h"
#include "tessera/attention/block_mask.h"
#include "tessera/compat/llamagen.h"
#include "tessera/compat/presets.h"
#include "tessera/core/rng.h"
#include "tessera/head/token_sampling.h"
#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/vq_vae.h"

namespace tessera {
namespace {

using testing::llamagen_parity_dir;

#define SKIP_WITHOUT_LLAMAGEN_FIXTURE()                                               \
  TESSERA_SKIP_WITHOUT_LLAMAGEN_FIXTURE("model.safetensors", "tokenizer.safetensors", \
                                        "io.safetensors")

using testing::relative_error;

Generator fixture_generator() {
  const std::filesystem::path dir = llamagen_parity_dir();
  return build_preset_generator(
      preset_from_reference_weights(dir / "model.safetensors"),
      {.transformer = dir / "model.safetensors", .tokenizer = dir / "tokenizer.safetensors"});
}

uint64_t fixture_seed(const SafetensorsFile& io) {
  return std::stoull(io.metadata().at("sample_seed"));
}

// The build's generator draws the probes as the reference's torch did: Exp(1) values, and
// torch.multinomial(probs, 1) by the exponential race.
TEST(LlamagenSamplingParity, RandomStreamMatchesTheReferenceProbes) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  const at::Tensor exponential = io.tensor("rng_probe.exponential");
  at::Generator g = make_cpu_generator(fixture_seed(io));
  EXPECT_TRUE(at::equal(at::empty(exponential.sizes()).exponential_(1.0, g), exponential));

  at::Generator h = make_cpu_generator(fixture_seed(io));
  const at::Tensor drawn = reference_multinomial(io.tensor("rng_probe.probs"), h,
                                                 ReferenceMultinomial::exponential_race);
  EXPECT_TRUE(at::equal(drawn, io.tensor("rng_probe.multinomial").to(at::kLong).flatten()));
}

// The settings come from the checkpoint's metadata, in LlamaGen's conventions.
TEST(LlamagenSamplingParity, MetadataSamplingSettingsUseLlamagenConventions) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  const GenerationOptions o =
      llamagen_sampling_from_metadata(io.metadata(), llamagen_default_sampling(64));
  EXPECT_EQ(o.guidance.kind, GuidanceKind::constant);
  EXPECT_DOUBLE_EQ(o.guidance.scale, std::stod(io.metadata().at("cfg_scale")));
  EXPECT_EQ(o.head.discrete.top_k, std::stoll(io.metadata().at("top_k")));
  EXPECT_DOUBLE_EQ(o.head.discrete.top_p, std::stod(io.metadata().at("top_p")));

  std::map<std::string, std::string> m = {{"cfg_scale", "1.5"}, {"cfg_interval", "3"}};
  const GenerationOptions cut = llamagen_sampling_from_metadata(m, llamagen_default_sampling(64));
  EXPECT_EQ(cut.guidance.kind, GuidanceKind::cutoff);
  EXPECT_EQ(cut.guidance.cutoff_step, 5);  // the prefill token and decode steps 0..3
  m = {{"cfg_scale", "1.0"}};
  EXPECT_EQ(llamagen_sampling_from_metadata(m, llamagen_default_sampling(64)).guidance.kind,
            GuidanceKind::none);
  m = {{"top_k", "many"}};
  testing::expect_error([&] { llamagen_sampling_from_metadata(m, llamagen_default_sampling(64)); },
                        {"top_k", "many"});
}

// generate(model, label, ..., cfg_scale, temperature, top_k, top_p) after torch.manual_seed:
// the same tokens, with the KV cache (LlamaGen's path) and with full re-runs of the prefix.
TEST(LlamagenSamplingParity, ReferenceSeedingReproducesTheReferenceTokensAndImage) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  Generator generator = fixture_generator();
  const at::Tensor labels = io.tensor("label").to(at::kLong);
  const at::Tensor reference = io.tensor("sampled_tokens").to(at::kLong);
  const SampleRequest request{.seed = fixture_seed(io),
                              .reference_seeding = true,
                              .reference_multinomial = ReferenceMultinomial::exponential_race};
  const Tokens tokens = generator.sample_tokens(labels, request);
  ASSERT_EQ(tokens.scales[0].sizes(), reference.sizes());
  EXPECT_TRUE(at::equal(tokens.scales[0], reference)) << tokens.scales[0] << "\n" << reference;

  GenerationOptions no_cache = generator.config().sampling;
  no_cache.schedule = RasterSamplingOptions{.kv_cache = false};
  SampleRequest full = request;
  full.options = no_cache;
  EXPECT_TRUE(at::equal(generator.sample_tokens(labels, full).scales[0], reference));

  // decode_code(sampled_tokens): the image before clamping, and what sample() returns.
  auto& vq = dynamic_cast<VqVae&>(generator.tokenizer());
  const at::Tensor image_ref = io.tensor("sample_image");
  const at::Tensor codes =
      vq.codebook()
          .index_select(0, reference.flatten())
          .view({image_ref.size(0), tokens.grids[0].height, tokens.grids[0].width, -1})
          .permute({0, 3, 1, 2});
  const double image_error = relative_error(vq.decode_latent(codes), image_ref);
  const double sample_error =
      relative_error(generator.sample(labels, request), image_ref.clamp(-1, 1));
  std::printf("LlamaGen sample_image: %.3g relative error (clamped, from sample(): %.3g)\n",
              image_error, sample_error);
  EXPECT_LT(image_error, 1e-4);
  EXPECT_LT(sample_error, 1e-4);
}

// Another seed, or Tessera's inverse CDF on the same seed, draws other tokens: the match above is
// the stream's, not an accident of a peaked distribution.
TEST(LlamagenSamplingParity, OtherStreamsDrawOtherTokens) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  Generator generator = fixture_generator();
  const at::Tensor labels = io.tensor("label").to(at::kLong);
  const at::Tensor reference = io.tensor("sampled_tokens").to(at::kLong);
  const uint64_t seed = fixture_seed(io);
  EXPECT_FALSE(at::equal(
      generator
          .sample_tokens(labels, {.seed = seed + 1,
                                  .reference_seeding = true,
                                  .reference_multinomial = ReferenceMultinomial::exponential_race})
          .scales[0],
      reference));
  EXPECT_FALSE(at::equal(
      generator.sample_tokens(labels, {.seed = seed, .reference_seeding = true}).scales[0],
      reference));
}

// Each step's raw logits (conditional rows, then the null class's) and the distribution handed
// to torch.multinomial, recomputed by teacher forcing the sampled tokens.
TEST(LlamagenSamplingParity, StepLogitsAndDistributionsMatchTheReference) {
  SKIP_WITHOUT_LLAMAGEN_FIXTURE();
  const SafetensorsFile io = SafetensorsFile::open(llamagen_parity_dir() / "io.safetensors");
  Generator generator = fixture_generator();
  generator.set_training(false);  // LlamaGen's eval(): no dropout, no class dropout
  at::NoGradGuard no_grad;
  const at::Tensor tokens = io.tensor("sampled_tokens").to(at::kLong);
  const at::Tensor labels = io.tensor("label").to(at::kLong);
  const int64_t batch = tokens.size(0), length = tokens.size(1);
  const int64_t num_classes = generator.backbone().config().num_classes;
  const at::Tensor inputs = at::cat({tokens, tokens}).narrow(1, 0, length - 1);
  const at::Tensor run_labels = at::cat({labels, at::full_like(labels, num_classes)});
  const BackboneOutput out = generator.backbone().forward(
      inputs, run_labels, BlockMask::causal(generator.backbone().layout()));
  const int64_t width = out.hidden.size(2);
  const at::Tensor logits = dynamic_cast<DiscreteHead&>(generator.head())
                                .logits(out.hidden.reshape({-1, width}))
                                .view({2 * batch, length, -1})
                                .transpose(0, 1);  // [steps, 2B, V] as the fixture stores them
  const at::Tensor logits_ref = io.tensor("sample.logits");
  ASSERT_EQ(logits.sizes(), logits_ref.sizes());
  const double logits_error = relative_error(logits, logits_ref);

  const GenerationOptions& o = generator.config().sampling;
  const at::Tensor probs =
      token_distribution(logits.narrow(1, 0, batch).reshape({-1, logits.size(2)}),
                         logits.narrow(1, batch, batch).reshape({-1, logits.size(2)}),
                         o.guidance.scale, o.head.temperature, o.head.discrete)
          .view({length, batch, -1});
  const double probs_error = relative_error(probs, io.tensor("sample.probs"));
  std::printf("LlamaGen sampling steps: logits %.3g, probs %.3g relative error\n", logits_error,
              probs_error);
  EXPECT_LT(logits_error, 1e-4);
  EXPECT_LT(probs_error, 1e-4);
}

}  // namespace
}  // namespace tessera
