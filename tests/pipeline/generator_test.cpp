// Generator files and bulk sampling: a saved generator samples exactly what the original samples,
// bulk sampling does not depend on the batch size, and bad inputs give errors naming the problem.
#include "tessera/pipeline/generator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "common/error_message.h"
#include "common/temporary_folder.h"
#include "pipeline/tiny_generator.h"
#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/pipeline/generator_evaluation.h"
#include "tessera/pipeline/generator_training.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

TEST(Generator, SavedFileSamplesExactlyWhatTheOriginalSamples) {
  Generator original(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 5);
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
  Generator generator(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
  const BulkSamples one_batch = sample_in_bulk(generator, {.count = 5, .batch_size = 5, .seed = 4});
  const BulkSamples small_batches =
      sample_in_bulk(generator, {.count = 5, .batch_size = 2, .seed = 4});
  EXPECT_TRUE(at::equal(one_batch.tokens.scales[0], small_batches.tokens.scales[0]));
  // Class-balanced: sample i asks for class i mod 10.
  EXPECT_TRUE(at::equal(one_batch.labels, at::tensor({0, 1, 2, 3, 4}, at::kLong)));
  EXPECT_EQ(one_batch.images.sizes(), (std::vector<int64_t>{5, 1, 32, 32}));
}

TEST(Generator, BadInputsAreNamed) {
  Generator generator(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 1);
  EXPECT_NE(testing::error_message_of([&] { generator.sample_tokens(at::tensor({10}, at::kLong)); }).find("labels"),
            std::string::npos);
  // A tokenizer file is not a generator file.
  EXPECT_NE(testing::error_message_of([&] { Generator::load(testing::kShippedVqVae); }).find("tessera.generator_config"),
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
  EXPECT_NE(testing::error_message_of([&] { generator.load_trainable_parameters(parameters); }).find("missing"),
            std::string::npos);
}

// Every shipped generator config parses and builds a generator whose parts fit together (the
// schedule's check_models against its tokenizer), so a config cannot rot unnoticed.
TEST(Generator, ShippedConfigsBuild) {
  const auto folder = std::filesystem::path(TESSERA_SOURCE_DIR) / "configs/generator";
  int configs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const auto config = load_config<GeneratorTrainConfig>(entry.path());
    const auto tokenizer_path = std::filesystem::path(TESSERA_SOURCE_DIR) / config.tokenizer;
    EXPECT_NO_THROW(Generator(config.generator, load_tokenizer_checkpoint(tokenizer_path), 0));
    ++configs;
  }
  EXPECT_GE(configs, 1);
}

// models/ holds at most 40 MB of weights in all (the budget for the shipped tokenizers,
// classifier and generators), and every generator file there loads and fits its tokenizer.
TEST(Generator, ShippedModelsFitTheBudgetAndLoad) {
  const auto folder = std::filesystem::path(TESSERA_SOURCE_DIR) / "models";
  std::uintmax_t bytes = 0;
  int generators = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(folder)) {
    if (!entry.is_regular_file()) continue;
    bytes += entry.file_size();
    if (entry.path().extension() != ".safetensors") continue;
    if (!SafetensorsFile::open(entry.path()).metadata().contains("tessera.generator_config")) continue;
    SCOPED_TRACE(entry.path().filename().string());
    EXPECT_NO_THROW(Generator::load(entry.path()));
    ++generators;
  }
  EXPECT_LE(bytes, std::uintmax_t{40} * 1000 * 1000) << "models/ holds " << bytes << " bytes";
  EXPECT_GE(generators, 1);
}

}  // namespace
}  // namespace tessera
