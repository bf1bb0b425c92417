// Generator files and bulk sampling: a saved generator samples exactly what the original samples,
// bulk sampling does not depend on the batch size, and bad inputs give errors naming the problem.
#include "tessera/pipeline/generator.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "common/error_message.h"
#include "common/source_paths.h"
#include "common/temporary_folder.h"
#include "pipeline/tiny_generator.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/eval/generator_evaluation.h"
#include "tessera/io/safetensors.h"
#include "tessera/pipeline/sampling_request.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/train/generator_training.h"

namespace tessera {
namespace {

TEST(Generator, SavedFileSamplesExactlyWhatTheOriginalSamples) {
  Generator original(testing::tiny_maskgit_config(),
                     load_tokenizer_checkpoint(testing::kShippedVqVae), 5);
  testing::TemporaryFolder folder("generator");
  const auto path = folder / "g.safetensors";
  original.save(path);
  Generator loaded = Generator::load(path);

  const at::Tensor labels = at::tensor({3, 7, 0}, at::kLong);
  const Tokens a = original.sample_tokens(labels, {.seed = 11});
  const Tokens b = loaded.sample_tokens(labels, {.seed = 11});
  ASSERT_EQ(a.num_scales(), 1);
  EXPECT_TRUE(at::equal(a.scales[0], b.scales[0]));
  EXPECT_EQ(a.scales[0].sizes(), (std::vector<int64_t>{3, 64}));
  EXPECT_GE(a.scales[0].min().item<int64_t>(), 0);
  EXPECT_LT(a.scales[0].max().item<int64_t>(), 256);  // never the mask id
  // Every tensor came back: the state dicts are equal.
  for (const auto& [name, tensor] : original.trainable_parameters()) {
    EXPECT_TRUE(at::equal(tensor, loaded.trainable_parameters().at(name))) << name;
  }
  // A different seed gives different samples.
  EXPECT_FALSE(at::equal(a.scales[0], original.sample_tokens(labels, {.seed = 12}).scales[0]));
}

TEST(Generator, BulkSamplingDoesNotDependOnTheBatchSize) {
  Generator generator(testing::tiny_maskgit_config(),
                      load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
  const BulkSamples one_batch = sample_in_bulk(generator, {.count = 5, .batch_size = 5, .seed = 4});
  const BulkSamples small_batches =
      sample_in_bulk(generator, {.count = 5, .batch_size = 2, .seed = 4});
  EXPECT_TRUE(at::equal(one_batch.tokens.scales[0], small_batches.tokens.scales[0]));
  // Class-balanced: sample i asks for class i mod 10.
  EXPECT_TRUE(at::equal(one_batch.labels, at::tensor({0, 1, 2, 3, 4}, at::kLong)));
  EXPECT_EQ(one_batch.images.sizes(), (std::vector<int64_t>{5, 1, 32, 32}));
}

// The demo judges the grid it shows: with class_rows_first, bulk sampling's first samples are the
// grid sample_class_rows draws, and every class still gets the same count.
TEST(Generator, BulkSamplingCanStartWithTheClassRowsGrid) {
  Generator generator(testing::tiny_maskgit_config(),
                      load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
  const BulkSamples grid = sample_class_rows(generator, {.per_class = 2, .seed = 9});
  const BulkSamples bulk =
      sample_in_bulk(generator, {.count = 40, .batch_size = 20, .seed = 9, .class_rows_first = 2});
  EXPECT_TRUE(at::equal(bulk.labels.slice(0, 0, 20), grid.labels));
  EXPECT_TRUE(at::equal(bulk.tokens.scales[0].slice(0, 0, 20), grid.tokens.scales[0]));
  EXPECT_TRUE(at::equal(bulk.images.slice(0, 0, 20), grid.images));
  // After the rows: class i mod 10, so each class appears 4 times in 40.
  EXPECT_TRUE(at::equal(bulk.labels.slice(0, 20, 23), at::tensor({0, 1, 2}, at::kLong)));
  EXPECT_TRUE(at::equal(at::bincount(bulk.labels), at::full({10}, 4, at::kLong)));
  // A grid larger than the count is cut off, still class by class.
  const BulkSamples short_bulk =
      sample_in_bulk(generator, {.count = 5, .batch_size = 5, .seed = 9, .class_rows_first = 2});
  EXPECT_TRUE(at::equal(short_bulk.labels, at::tensor({0, 0, 1, 1, 2}, at::kLong)));
  EXPECT_NE(testing::error_message_of([&] {
              sample_in_bulk(generator, {.count = 5, .class_rows_first = -1});
            }).find("class_rows_first"),
            std::string::npos);
}

// The grid's labels: the classes asked for in their order (all of them when none), each repeated
// per_class times; a class outside the generator is refused by name.
TEST(Generator, ClassRowLabelsFollowTheRequest) {
  Generator generator(testing::tiny_maskgit_config(),
                      load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
  EXPECT_TRUE(at::equal(class_row_labels(generator, {.per_class = 2, .classes = {7, 3}}),
                        at::tensor({7, 7, 3, 3}, at::kLong)));
  const at::Tensor every_class = class_row_labels(generator, {.per_class = 1});
  EXPECT_TRUE(at::equal(every_class, at::arange(10, at::kLong)));
  EXPECT_NE(testing::error_message_of([&] {
              class_row_labels(generator, {.per_class = 1, .classes = {10}});
            }).find("class 10 is outside the generator's classes [0, 10)"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] { class_row_labels(generator, {.per_class = 0}); })
                .find("per_class must be >= 1"),
            std::string::npos);
}

// Sampling options of the schedule change without retraining: a request asking for MaskGIT's
// steps 2 samples what a generator whose file records steps 2 (and the same weights) samples,
// with the generator itself unchanged. Options training fixed, unknown keys, and steps beyond the
// token count are refused by name.
TEST(Generator, ScheduleSamplingOptionsChangeWithoutRetraining) {
  const std::shared_ptr<Tokenizer> tokenizer = load_tokenizer_checkpoint(testing::kShippedVqVae);
  Generator generator(testing::tiny_maskgit_config(), tokenizer, 5);
  GeneratorConfig two_steps = testing::tiny_maskgit_config();
  two_steps.schedule.maskgit.sampling.steps = 2;
  Generator built_with_two_steps(two_steps, tokenizer, 5);
  const at::Tensor labels = at::tensor({3, 7, 0}, at::kLong);
  const at::Tensor four_step_tokens = generator.sample_tokens(labels, {.seed = 11}).scales[0];

  const GenerationOptions request =
      sampling_request(generator.config(), R"({"schedule": {"steps": 2}})");
  ASSERT_NE(request.schedule.get<MaskGitSamplingOptions>(), nullptr);
  EXPECT_EQ(request.schedule.get<MaskGitSamplingOptions>()->steps, 2);
  EXPECT_EQ(generator.schedule().num_steps(generator.token_grids(), request), 2);
  EXPECT_EQ(generator.schedule().num_steps(generator.token_grids()), 4);
  const at::Tensor two_step_tokens =
      generator.sample_tokens(labels, {.seed = 11, .options = request}).scales[0];
  EXPECT_TRUE(at::equal(two_step_tokens,
                        built_with_two_steps.sample_tokens(labels, {.seed = 11}).scales[0]));
  EXPECT_FALSE(at::equal(two_step_tokens, four_step_tokens));
  // The generator is unchanged: its defaults still sample four steps.
  EXPECT_EQ(generator.config().schedule.maskgit.sampling.steps, 4);
  EXPECT_TRUE(at::equal(generator.sample_tokens(labels, {.seed = 11}).scales[0], four_step_tokens));
  // The defaults as a full request sample what no request samples.
  EXPECT_TRUE(at::equal(
      generator.sample_tokens(labels, {.seed = 11, .options = default_request(generator.config())})
          .scales[0],
      four_step_tokens));

  const GenerationOptions too_many =
      sampling_request(generator.config(), R"({"schedule": {"steps": 65}})");
  EXPECT_NE(testing::error_message_of([&] {
              generator.check_options(too_many);
            }).find("steps must be <= 64"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] {
              generator.sample_tokens(labels, {.seed = 11, .options = too_many});
            }).find("steps must be <= 64"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] {
              sampling_request(generator.config(), R"({"schedule": {"condition_tokens": 0}})");
            }).find("'condition_tokens' of the maskgit schedule is fixed by training"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] {
              sampling_request(generator.config(), R"({"schedule": {"bogus": 1}})");
            }).find("unknown key 'bogus' in sampling.schedule"),
            std::string::npos);
  // Options of another schedule are refused by the schedule.
  GenerationOptions other;
  other.schedule = MarSamplingOptions{.steps = 2};
  EXPECT_NE(testing::error_message_of([&] {
              generator.sample_tokens(labels, {.seed = 11, .options = other});
            }).find("the maskgit schedule was given the sampling options of the mar schedule"),
            std::string::npos);
}

TEST(Generator, BadInputsAreNamed) {
  Generator generator(testing::tiny_maskgit_config(),
                      load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
  EXPECT_NE(testing::error_message_of([&] {
              generator.sample_tokens(at::tensor({10}, at::kLong));
            }).find("labels"),
            std::string::npos);
  // A tokenizer file is not a generator file.
  EXPECT_NE(testing::error_message_of([&] {
              Generator::load(testing::kShippedVqVae);
            }).find("tessera.generator_config"),
            std::string::npos);
  // A head whose vocabulary is not the tokenizer's.
  GeneratorConfig wrong = testing::tiny_maskgit_config();
  wrong.head.discrete.vocab_size = 128;
  EXPECT_FALSE(testing::error_message_of([&] {
                 Generator g(wrong, load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
               }).empty());
  // Parameters loaded by name must all fit.
  auto parameters = generator.trainable_parameters();
  parameters.erase(parameters.begin());
  EXPECT_NE(testing::error_message_of([&] {
              generator.load_trainable_parameters(parameters);
            }).find("missing"),
            std::string::npos);
}

// MAR's encoder–decoder split (Note [MAR encoder–decoder split]) over the shipped KL-VAE's 8x8
// tokens of 8 channels: the decoder is saved, loaded, trained and sampled with the rest.
TEST(Generator, EncoderDecoderSplitIsSavedLoadedAndTrained) {
  const auto kl_vae =
      tessera::testing::source_dir() / "models/tokenizers/kl_vae_fashion_mnist.safetensors";
  GeneratorConfig config;
  config.backbone = mar_style_config(32, 1, 2, /*num_tokens=*/64, /*token_channels=*/8, 10, 4);
  config.decoder = mar_decoder_config(32, 1, 2, 64, /*encoder_width=*/32, 4);
  config.head.kind = HeadKind::flow_matching;
  config.head.flow_matching.mlp = {.token_channels = 8,
                                   .hidden_width = 32,
                                   .width = 32,
                                   .depth = 1,
                                   .frequency_embedding_size = 32};
  config.schedule.kind = ScheduleKind::mar;
  config.schedule.mar.buffer_size = 4;
  config.schedule.mar.sampling.steps = 4;
  config.schedule.mar.encoder_decoder = true;
  config.sampling.guidance = Guidance::mar_token_ramp(2.0);
  config.sampling.head.flow.steps = 3;
  Generator original(config, load_tokenizer_checkpoint(kl_vae), 5);
  ASSERT_NE(original.decoder(), nullptr);
  const auto parameters = original.trainable_parameters();
  EXPECT_TRUE(parameters.contains("decoder.word_embed.weight"));
  EXPECT_TRUE(parameters.contains("backbone.word_embed.weight"));
  EXPECT_EQ(parameters.at("decoder.word_embed.weight").sizes(), (std::vector<int64_t>{32, 33}));

  testing::TemporaryFolder folder("generator_split");
  const auto path = folder / "g.safetensors";
  original.save(path);
  Generator loaded = Generator::load(path);
  ASSERT_NE(loaded.decoder(), nullptr);
  const at::Tensor labels = at::tensor({1, 8}, at::kLong);
  EXPECT_TRUE(at::equal(original.sample_tokens(labels, {.seed = 3}).scales[0],
                        loaded.sample_tokens(labels, {.seed = 3}).scales[0]));

  // One training step reaches the decoder's parameters. MAR's head starts with a zero output
  // layer (no gradient flows back through it), so its parameters are perturbed first.
  {
    at::NoGradGuard no_grad;
    at::Generator noise = make_cpu_generator(9);
    for (auto& [name, tensor] : original.trainable_parameters())
      if (name.starts_with("head.")) tensor.add_(at::randn(tensor.sizes(), noise) * 0.05);
  }
  original.set_training(true);
  const TrainingBatch batch =
      original.encode_batch(at::zeros({2, 1, 32, 32}).uniform_(-1, 1), labels);
  at::Generator gen = make_cpu_generator(0);
  original.loss(batch, gen).loss.backward();
  const at::Tensor grad =
      original.trainable_parameters().at("decoder.blocks.0.attn.proj.weight").grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad.abs().sum().item<double>(), 0.0);

  // A split whose parts disagree with the schedule is named: no indicator channel for one stack,
  // no decoder for encoder_decoder.
  GeneratorConfig one_stack = config;
  one_stack.decoder.reset();
  one_stack.schedule.mar.encoder_decoder = false;
  EXPECT_NE(testing::error_message_of([&] {
              Generator g(one_stack, load_tokenizer_checkpoint(kl_vae), 1);
            }).find("indicator"),
            std::string::npos);
  config.decoder.reset();
  EXPECT_NE(testing::error_message_of([&] {
              Generator g(config, load_tokenizer_checkpoint(kl_vae), 1);
            }).find("no decoder backbone"),
            std::string::npos);
}

// Note [Clipping x̂_0] on the shipped MAR-diffusion model: without clipping, the first sampling
// step (t = 999, ᾱ ≈ 1e-8) multiplies the small head's ε error by about 1e4 and the tokens come out
// hundreds of times wider than the KL-VAE's (deviation 1); with the file's default clip_x_start
// they keep the data's scale.
TEST(DiffusionHeadOnShippedMar, UnclippedSamplesBlowUpAtLowSnr) {
  Generator generator = Generator::load(tessera::testing::source_dir() /
                                        "models/mar_diffusion_fashion_mnist.safetensors");
  const GenerationOptions defaults = generator.config().sampling;
  ASSERT_GT(defaults.head.diffusion.clip_x_start, 0.0);
  GenerationOptions unclipped = defaults;
  unclipped.head.diffusion.clip_x_start = 0.0;
  const at::Tensor labels = at::arange(10, at::kLong);
  const double clipped_std =
      generator.sample_tokens(labels, {.seed = 1}).scales[0].std().item<double>();
  const double unclipped_std = generator.sample_tokens(labels, {.seed = 1, .options = unclipped})
                                   .scales[0]
                                   .std()
                                   .item<double>();
  std::printf("MAR-diffusion token deviation: %.3f clipped (clip_x_start %.1f), %.1f unclipped\n",
              clipped_std, defaults.head.diffusion.clip_x_start, unclipped_std);
  EXPECT_LT(clipped_std, 2.0);
  EXPECT_GT(unclipped_std, 50.0);
}

// The generators models/ ships, one per family: the seven of docs/models.md's table (and of the
// README's demo table). A file missing from models/, or one added without an entry here (and in
// the docs), fails ShippedModelsFitTheBudgetAndLoad.
const std::set<std::string> kShippedGenerators = {
    "hi_mar_fashion_mnist",   "hmar_fashion_mnist",    "mar_diffusion_fashion_mnist",
    "mar_flow_fashion_mnist", "maskgit_fashion_mnist", "raster_fashion_mnist",
    "var_fashion_mnist"};

// Every name a ConfigEnum lists (the enum's values, from its header).
template <class Enum>
std::set<std::string> every_value_name() {
  std::set<std::string> names;
  for (const auto& [value, name] : ConfigEnum<Enum>::values) names.insert(name);
  return names;
}

// Every shipped generator config parses and builds a generator whose parts fit together (the
// schedule's check_models against its tokenizer), so a config cannot rot unnoticed; between them
// the configs use every schedule and every head the enums name, so a family whose config went
// missing fails here (the shipped models' configs are required by the test below).
TEST(Generator, ShippedConfigsBuildAndCoverEveryScheduleAndHead) {
  const auto folder = tessera::testing::source_dir() / "configs/generator";
  std::set<std::string> schedules, heads;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const auto config = load_config<GeneratorTrainConfig>(entry.path());
    const auto tokenizer_path = tessera::testing::source_dir() / config.tokenizer;
    EXPECT_NO_THROW(Generator(config.generator, load_tokenizer_checkpoint(tokenizer_path), 0));
    schedules.insert(config_to_json(config.generator.schedule)["kind"].get<std::string>());
    heads.insert(config_to_json(config.generator.head)["kind"].get<std::string>());
  }
  EXPECT_EQ(schedules, every_value_name<ScheduleKind>());
  EXPECT_EQ(heads, every_value_name<HeadKind>());
}

// models/ holds at most 40 MB of weights in all (the issue's budget for the shipped tokenizers,
// classifier and generators); its generator files are exactly kShippedGenerators, and each loads,
// fits its tokenizer and samples with the schedule of its config in configs/generator/.
TEST(Generator, ShippedModelsFitTheBudgetAndLoad) {
  const auto folder = tessera::testing::source_dir() / "models";
  std::uintmax_t bytes = 0;
  std::set<std::string> generators;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder)) {
    if (!entry.is_regular_file()) continue;
    bytes += entry.file_size();
    if (entry.path().extension() != ".safetensors") continue;
    if (!SafetensorsFile::open(entry.path()).metadata().contains("tessera.generator_config"))
      continue;
    SCOPED_TRACE(entry.path().filename().string());
    generators.insert(entry.path().stem().string());
    std::optional<Generator> generator;
    EXPECT_NO_THROW(generator.emplace(Generator::load(entry.path())));
    // docs/models.md reproduces each file from its config: the schedule a file samples with is
    // the config's (sampling defaults may differ: `tessera convert --sampling` retuned guidance).
    const auto config_path = tessera::testing::source_dir() / "configs/generator" /
                             (entry.path().stem().string() + ".json");
    if (!std::filesystem::exists(config_path)) {
      ADD_FAILURE() << "no config " << config_path;
      continue;
    }
    if (generator) {
      EXPECT_EQ(config_to_json(generator->config().schedule),
                config_to_json(load_config<GeneratorTrainConfig>(config_path).generator.schedule));
    }
  }
  EXPECT_LE(bytes, std::uintmax_t{40} * 1000 * 1000) << "models/ holds " << bytes << " bytes";
  EXPECT_EQ(generators, kShippedGenerators);
}

}  // namespace
}  // namespace tessera
