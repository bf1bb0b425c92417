// tessera convert's two jobs: casting a weights file (a bf16 generator samples exactly what the
// fp32 generator with bf16-rounded weights samples) and extracting the generator of a training
// checkpoint (its parameters are the trainer's EMA averages or trained parameters, bit for bit).
#include "tessera/compat/weights_conversion.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/error_message.h"
#include "common/temporary_folder.h"
#include "pipeline/tiny_generator.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/io/safetensors.h"
#include "tessera/train/generator_training.h"
#include "tessera/train/trainer.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

TEST(WeightsConversion, Bf16FileHoldsRoundedWeightsAndSamplesLikeThem) {
  testing::TemporaryFolder folder("convert");
  Generator original(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 3);
  original.save(folder / "fp32.safetensors", {{"tessera.step", "7"}});

  const CastReport report =
      cast_weights_file(folder / "fp32.safetensors", folder / "bf16.safetensors", at::kBFloat16);
  const SafetensorsFile fp32 = SafetensorsFile::open(folder / "fp32.safetensors");
  const SafetensorsFile bf16 = SafetensorsFile::open(folder / "bf16.safetensors");
  EXPECT_EQ(report.tensors, static_cast<int64_t>(fp32.size()));
  EXPECT_GT(report.cast, 0);
  EXPECT_LT(report.bytes_after, report.bytes_before * 0.51 + 1024);  // integer buffers stay

  // The reference: every floating tensor rounded by torch's own conversion, the rest untouched,
  // written as an fp32 file with the same metadata.
  std::map<std::string, at::Tensor> rounded;
  for (const auto& [name, tensor] : fp32.all()) {
    const at::Tensor stored = bf16.tensor(name);
    if (at::isFloatingType(tensor.scalar_type())) {
      EXPECT_EQ(stored.scalar_type(), at::kBFloat16) << name;
      EXPECT_TRUE(at::equal(stored, tensor.to(at::kBFloat16))) << name;
      rounded.emplace(name, tensor.to(at::kBFloat16).to(tensor.scalar_type()));
    } else {
      EXPECT_EQ(stored.scalar_type(), tensor.scalar_type()) << name;
      EXPECT_TRUE(at::equal(stored, tensor)) << name;
      rounded.emplace(name, tensor);
    }
  }
  for (const auto& [key, value] : fp32.metadata()) EXPECT_EQ(bf16.metadata().at(key), value) << key;
  EXPECT_EQ(bf16.metadata().at("tessera.stored_dtype"), "BF16");
  save_safetensors(folder / "rounded.safetensors", rounded, fp32.metadata());

  Generator from_bf16 = Generator::load(folder / "bf16.safetensors");
  Generator reference = Generator::load(folder / "rounded.safetensors");
  const at::Tensor labels = at::tensor({1, 4, 9}, at::kLong);
  const at::Tensor a = from_bf16.sample(labels, {.seed = 5});
  const at::Tensor b = reference.sample(labels, {.seed = 5});
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_EQ(a.scalar_type(), at::kFloat);  // the model computes in fp32 whatever it was stored in
}

TEST(WeightsConversion, CastsInPlaceAndBack) {
  testing::TemporaryFolder folder("convert");
  Generator original(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 3);
  const auto path = folder / "g.safetensors";
  original.save(path);
  cast_weights_file(path, path, at::kHalf);
  EXPECT_EQ(SafetensorsFile::open(path).metadata().at("tessera.stored_dtype"), "F16");
  cast_weights_file(path, path, at::kFloat);
  const Generator back = Generator::load(path);
  for (const auto& [name, tensor] : original.trainable_parameters()) {
    EXPECT_TRUE(at::equal(back.trainable_parameters().at(name),
                          tensor.to(at::kHalf).to(at::kFloat)))
        << name;
  }
}

TEST(WeightsConversion, BadDtypesAndFilesAreNamed) {
  EXPECT_EQ(parse_stored_dtype("bf16"), at::kBFloat16);
  EXPECT_EQ(parse_stored_dtype("F16"), at::kHalf);
  EXPECT_NE(testing::error_message_of([] { parse_stored_dtype("int8"); }).find("expected bf16, fp16 or fp32"),
            std::string::npos);
  testing::TemporaryFolder folder("convert");
  EXPECT_NE(testing::error_message_of([&] {
              cast_weights_file(folder / "absent.safetensors", folder / "out.safetensors",
                                at::kBFloat16);
            }).find("absent.safetensors"),
            std::string::npos);
  // A generator file is not a training checkpoint.
  Generator generator(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 3);
  generator.save(folder / "g.safetensors");
  EXPECT_NE(testing::error_message_of([&] { checkpoint_step(folder / "g.safetensors"); }).find("tessera.step"),
            std::string::npos);
  // A tokenizer file carries no generator config.
  EXPECT_NE(testing::error_message_of([&] {
              generator_from_checkpoint(testing::kShippedVqVae,
                                        load_tokenizer_checkpoint(testing::kShippedVqVae),
                                        CheckpointWeights::ema);
            }).find("tessera.generator_config"),
            std::string::npos);
}

// A JSON merge patch over the sampling defaults: named keys change, the rest keep their values,
// unknown keys and out-of-range values are rejected by name; stored in a file, it becomes the
// generator's new defaults and nothing else in the file changes.
TEST(WeightsConversion, SamplingDefaultsArePatchedByName) {
  GeneratorConfig config = testing::tiny_maskgit_config();
  config.sampling.guidance = Guidance::constant(2.0);
  config.sampling.head.temperature = 0.9;
  const GenerationOptions patched = sampling_request(
      config, R"({"guidance": {"scale": 4.5}, "head": {"discrete": {"top_k": 5}}})");
  EXPECT_EQ(patched.guidance.kind, GuidanceKind::constant);
  EXPECT_DOUBLE_EQ(patched.guidance.scale, 4.5);
  EXPECT_DOUBLE_EQ(patched.head.temperature, 0.9);
  EXPECT_EQ(patched.head.discrete.top_k, 5);
  ASSERT_NE(patched.schedule.get<MaskGitSamplingOptions>(), nullptr);  // the file's defaults
  EXPECT_EQ(patched.schedule.get<MaskGitSamplingOptions>()->steps, 4);
  EXPECT_NE(testing::error_message_of([&] {
              sampling_request(config, R"({"guidance": {"scael": 4}})");
            }).find("scael"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] {
              sampling_request(config, R"({"head": {"temperature": 0}})");
            }).find("temperature"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] { sampling_request(config, "[1, 2]"); })
                .find("JSON object"),
            std::string::npos);

  testing::TemporaryFolder folder("convert");
  Generator original(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 3);
  const auto path = folder / "g.safetensors";
  original.save(path);
  set_generator_sampling(path, R"({"guidance": {"scale": 3.25}})");
  const Generator retuned = Generator::load(path);
  EXPECT_DOUBLE_EQ(retuned.config().sampling.guidance.scale, 3.25);
  EXPECT_EQ(config_to_json(retuned.config().backbone), config_to_json(original.config().backbone));
  for (const auto& [name, tensor] : original.trainable_parameters()) {
    EXPECT_TRUE(at::equal(retuned.trainable_parameters().at(name), tensor)) << name;
  }

  // The schedule's sampling options ride in the same patch (the tiny MaskGIT has 4 steps).
  const GenerationOptions settings = sampling_request(
      original.config(), R"({"schedule": {"steps": 2}, "head": {"temperature": 0.8}})");
  const auto* maskgit = settings.schedule.get<MaskGitSamplingOptions>();
  ASSERT_NE(maskgit, nullptr);
  EXPECT_EQ(maskgit->steps, 2);
  EXPECT_EQ(maskgit->choice_temperature,
            original.config().schedule.maskgit.sampling.choice_temperature);
  EXPECT_DOUBLE_EQ(settings.head.temperature, 0.8);
  EXPECT_DOUBLE_EQ(settings.guidance.scale, original.config().sampling.guidance.scale);
  EXPECT_NE(testing::error_message_of([&] {
              sampling_request(original.config(), R"({"schedule": {"span_length": 2}})");
            }).find("'span_length' of the maskgit schedule is fixed by training"),
            std::string::npos);
  const GenerationOptions stored = set_generator_sampling(path, R"({"schedule": {"steps": 2}})");
  ASSERT_NE(stored.schedule.get<MaskGitSamplingOptions>(), nullptr);
  EXPECT_EQ(stored.schedule.get<MaskGitSamplingOptions>()->steps, 2);
  EXPECT_EQ(Generator::load(path).config().schedule.maskgit.sampling.steps, 2);
  // The file's new defaults sample what the request sampled from the original file.
  const at::Tensor labels = at::tensor({1, 4}, at::kLong);
  const GenerationOptions two_steps = default_request(Generator::load(path).config());
  EXPECT_TRUE(at::equal(
      Generator::load(path).sample_tokens(labels, {.seed = 2}).scales[0],
      original.sample_tokens(labels, {.seed = 2, .options = two_steps}).scales[0]));
  EXPECT_DOUBLE_EQ(Generator::load(path).config().sampling.guidance.scale, 3.25);
  // Steps that do not fit the 64 tokens are refused before the file is touched.
  EXPECT_NE(testing::error_message_of([&] {
              set_generator_sampling(path,
                                     R"({"schedule": {"steps": 100}, "guidance": {"scale": 9}})");
            }).find("steps must be <= 64"),
            std::string::npos);
  EXPECT_EQ(Generator::load(path).config().schedule.maskgit.sampling.steps, 2);
  EXPECT_DOUBLE_EQ(Generator::load(path).config().sampling.guidance.scale, 3.25);
}

// Three optimizer steps on random ids: the extracted generators hold exactly the trainer's EMA
// averages and its trained parameters.
TEST(WeightsConversion, CheckpointGivesTheTrainersWeights) {
  testing::TemporaryFolder folder("convert");
  Generator generator(testing::tiny_maskgit_config(), load_tokenizer_checkpoint(testing::kShippedVqVae), 3);
  at::Generator rng = make_cpu_generator(2);
  Tokens tokens;
  tokens.grids = {{8, 8}};
  tokens.scales = {at::randint(0, 256, {16, 64}, rng, at::kLong)};
  GeneratorTask task(generator, tokens, at::randint(0, 10, {16}, rng, at::kLong));
  TrainerConfig config;
  config.steps = 3;
  config.batch_size = 4;
  config.ema.enabled = true;
  config.ema.decay = 0.5;
  config.output_dir = (folder / "run").string();
  config.progress_bar = false;
  Trainer trainer(config, task);
  const TrainResult result = trainer.run();
  ASSERT_EQ(result.steps, 3);

  EXPECT_EQ(checkpoint_step(result.checkpoint), 3);
  const Generator ema = generator_from_checkpoint(
      result.checkpoint, load_tokenizer_checkpoint(testing::kShippedVqVae), CheckpointWeights::ema);
  const Generator trained = generator_from_checkpoint(
      result.checkpoint, load_tokenizer_checkpoint(testing::kShippedVqVae), CheckpointWeights::trained);
  int64_t differing = 0;
  for (const auto& [name, average] : trainer.ema()->averages()) {
    EXPECT_TRUE(at::equal(ema.trainable_parameters().at(name), average)) << name;
    const at::Tensor current = generator.trainable_parameters().at(name);
    EXPECT_TRUE(at::equal(trained.trainable_parameters().at(name), current)) << name;
    if (!at::equal(average, current)) ++differing;
  }
  EXPECT_GT(differing, 0);  // the two choices are different weights
}

}  // namespace
}  // namespace tessera
