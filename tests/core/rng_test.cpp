#include "tessera/core/rng.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "common/error_message.h"
#include "common/parity_dir.h"
#include "tessera/core/error.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

TEST(Rng, SplitMix64MatchesPublishedSequence) {
  // The reference SplitMix64 generator seeded with 1234567 outputs these first values; output n
  // is splitmix64(seed + n * golden) in our single-step form.
  const uint64_t golden = 0x9e3779b97f4a7c15ULL;
  EXPECT_EQ(splitmix64(1234567), 6457827717110365317ULL);
  EXPECT_EQ(splitmix64(1234567 + golden), 3203168211198807973ULL);
  EXPECT_EQ(splitmix64(1234567 + 2 * golden), 9817491932198370423ULL);
}

TEST(Rng, DerivedSeedsAreDistinct) {
  std::set<uint64_t> seeds;
  for (uint64_t seed : {0ULL, 1ULL, 42ULL}) {
    for (uint64_t stream = 0; stream < 1000; ++stream) seeds.insert(derive_seed(seed, stream));
  }
  EXPECT_EQ(seeds.size(), 3000u);
}

TEST(Rng, CpuGeneratorMatchesTorchSeeding) {
  // Fixture from PyTorch 2.11 (python): g = torch.Generator().manual_seed(7);
  // torch.rand(4, generator=g) and, freshly seeded, torch.randn(4, generator=g).
  const float rand_expected[4] = {0.5349225401878357f, 0.19880318641662598f, 0.6592116951942444f,
                                  0.6568902730941772f};
  const float randn_expected[4] = {-0.1467950940132141f, 0.7861412763595581f, 0.9468216300010681f,
                                   -1.1143440008163452f};
  at::Generator g = make_cpu_generator(7);
  at::Tensor u = at::empty({4}).uniform_(0, 1, g);
  g = make_cpu_generator(7);
  at::Tensor n = at::empty({4}).normal_(0, 1, g);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ(u[i].item<float>(), rand_expected[i]);
    EXPECT_NEAR(n[i].item<float>(), randn_expected[i], 1e-6);
  }
}

TEST(Rng, SampleIIsTheSameAloneOrInABatch) {
  SampleRngs batch(1234, 0, 8);
  at::Tensor u_batch = batch.uniform({3, 5});
  at::Tensor n_batch = batch.normal({7});
  at::Tensor g_batch = batch.gumbel({2});
  at::Tensor probs = at::softmax(at::arange(24, at::kFloat).reshape({8, 3}), 1);
  at::Tensor c_batch = batch.categorical(probs);
  for (int64_t i : {0, 3, 7}) {
    SampleRngs alone(1234, i, 1);
    EXPECT_TRUE(at::equal(alone.uniform({3, 5})[0], u_batch[i])) << "sample " << i;
    EXPECT_TRUE(at::equal(alone.normal({7})[0], n_batch[i])) << "sample " << i;
    EXPECT_TRUE(at::equal(alone.gumbel({2})[0], g_batch[i])) << "sample " << i;
    EXPECT_EQ(alone.categorical(probs.slice(0, i, i + 1)).item<int64_t>(),
              c_batch[i].item<int64_t>());
  }
}

TEST(Rng, SubsetAdvancesTheSameStreams) {
  SampleRngs all(99, 0, 4), reference(99, 0, 4);
  SampleRngs some = all.subset({1, 3});
  at::Tensor drawn = some.uniform({2});
  at::Tensor expected = reference.uniform({2});
  EXPECT_TRUE(at::equal(drawn[0], expected[1]));
  EXPECT_TRUE(at::equal(drawn[1], expected[3]));
  // The subset's draws advanced samples 1 and 3 of `all`, not 0 and 2.
  at::Tensor next = all.uniform({2});
  at::Tensor next_reference = reference.uniform({2});
  EXPECT_FALSE(at::equal(next[0], next_reference[0]));  // sample 0 of `all` is one draw behind
  EXPECT_TRUE(at::equal(next[1], next_reference[1]));
}

TEST(Rng, CategoricalFrequenciesFollowTheProbabilities) {
  // 20000 draws from p = (0.1, 0, 0.6, 0.3): zero-probability ids never appear, and each
  // frequency is within 5 standard deviations of its probability.
  const int64_t n = 20000;
  SampleRngs rngs(5, 0, n);
  at::Tensor p = at::tensor({0.1, 0.0, 0.6, 0.3}, at::kDouble).repeat({n, 1});
  at::Tensor ids = rngs.categorical(p);
  at::Tensor counts = at::bincount(ids, {}, 4).to(at::kDouble) / n;
  const double expected[4] = {0.1, 0.0, 0.6, 0.3};
  for (int k = 0; k < 4; ++k) {
    const double sd = std::sqrt(expected[k] * (1 - expected[k]) / n);
    EXPECT_NEAR(counts[k].item<double>(), expected[k], 5 * sd + 1e-12) << "id " << k;
  }
}

TEST(Rng, CdfSearchMultinomialIsTheInverseCdfOfTheRow) {
  // Written out by hand: for p = (0.25, 0, 0.5, 0.25) the cumulative values are 0.25, 0.25,
  // 0.75, 1, so u < 0.25 gives 0 (never the zero-probability 1), u in [0.25, 0.75) gives 2 and
  // u >= 0.75 gives 3; unnormalised rows are divided by their total first. The uniforms are the
  // generator's first doubles (53 bits of each 64-bit output, as torch.rand(dtype=float64)).
  const at::Tensor p = at::tensor({0.25, 0.0, 0.5, 0.25, 2.0, 0.0, 4.0, 2.0}, at::kDouble)
                           .reshape({2, 4})
                           .repeat({20, 1});
  at::Generator g = make_cpu_generator(11);
  const at::Tensor ids = cdf_search_multinomial(p, g);
  at::Generator again = make_cpu_generator(11);
  const at::Tensor u = at::empty({p.size(0)}, at::kDouble).uniform_(0.0, 1.0, again);
  for (int64_t i = 0; i < p.size(0); ++i) {
    const double ui = u[i].item<double>();
    const int64_t expected = ui < 0.25 ? 0 : (ui < 0.75 ? 2 : 3);
    EXPECT_EQ(ids[i].item<int64_t>(), expected) << "row " << i << ", u = " << ui;
  }
  // float32 rows are accumulated in float32 and give the same ids here (exact binary fractions).
  at::Generator g32 = make_cpu_generator(11);
  EXPECT_TRUE(at::equal(cdf_search_multinomial(p.to(at::kFloat), g32), ids));
}

TEST(Rng, SharedStreamDrawsTheBatchInOneCall) {
  // torch.rand(3, 5, generator=g) / torch.randn(3, 17, generator=g) after manual_seed(5): the
  // batch's rows are consecutive stretches of one stream, not one stream per sample.
  SampleRngs shared = SampleRngs::shared_stream(5, 3);
  EXPECT_TRUE(shared.shares_one_stream());
  at::Generator g = make_cpu_generator(5);
  EXPECT_TRUE(at::equal(shared.uniform({5}), at::empty({3, 5}).uniform_(0.0, 1.0, g)));
  EXPECT_TRUE(at::equal(shared.normal({17}), at::empty({3, 17}).normal_(0.0, 1.0, g)));
  // A subset shares the stream too.
  SampleRngs some = shared.subset({0, 2});
  EXPECT_TRUE(some.shares_one_stream());
  EXPECT_TRUE(at::equal(some.uniform({}), at::empty({2}).uniform_(0.0, 1.0, g)));
  // And sample 0 depends on the batch size, unlike per-sample streams.
  EXPECT_FALSE(at::equal(SampleRngs::shared_stream(5, 1).uniform({5})[0],
                         SampleRngs::shared_stream(5, 2).uniform({5})[1]));
}

TEST(Rng, BadInputIsAClearError) {
  EXPECT_THROW(SampleRngs(1, -1, 2), Error);
  SampleRngs rngs(1, 0, 2);
  EXPECT_THROW(rngs.generator(2), Error);
  EXPECT_THROW(rngs.categorical(at::ones({3, 4})), Error);
  EXPECT_THROW(rngs.categorical(at::zeros({2, 4})), Error);
  EXPECT_THROW(rngs.categorical(-at::ones({2, 4})), Error);
  at::Generator g = make_cpu_generator(1);
  EXPECT_NE(testing::error_message_of([&] {
              cdf_search_multinomial(at::tensor({0.5, -0.1, 0.6}).reshape({1, 3}), g);
            }).find("non-negative"),
            std::string::npos);
  EXPECT_NE(testing::error_message_of([&] {
              cdf_search_multinomial(at::zeros({2, 3}), g);
            }).find("row 0 sums to 0"),
            std::string::npos);
  EXPECT_NE(
      testing::error_message_of([&] { cdf_search_multinomial(at::ones({3}), g); }).find("[N, V]"),
      std::string::npos);
  try {
    rngs.categorical(at::ones({3, 4}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one row per sample"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST(Rng, CpuGeneratorMatchesTheVarFixtureStream) {
  // The fixture's io.safetensors (../shared/parity/var-tiny: 16 draws) holds
  // torch.empty(n).exponential_(generator=g) for a CPU generator seeded with 7 (the README's probe
  // seed), drawn by the reference environment (torch 1.13); n is read from the tensor.
  const std::filesystem::path dir = testing::parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors");
  const auto io = load_safetensors(dir / "io.safetensors");
  const at::Tensor expected = io.at("rng_probe.exponential");
  at::Generator g = make_cpu_generator(7);
  at::Tensor drawn = at::empty({expected.numel()}, at::kFloat).exponential_(1.0, g);
  EXPECT_TRUE(at::equal(drawn, expected.to(at::kFloat)))
      << "drawn " << drawn << "\nexpected " << expected;
}

TEST(Rng, CdfSearchMultinomialMatchesTheVarFixtureDraws) {
  // rng_probe.multinomial: torch.multinomial(probs, 1, replacement=True, generator=g), g seeded
  // with 7, drawn by torch 1.13 (Note [Reference seeding]); probs has the fixture's own shape.
  const std::filesystem::path dir = testing::parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors");
  const auto io = load_safetensors(dir / "io.safetensors");
  at::Generator g = make_cpu_generator(7);
  const at::Tensor drawn = cdf_search_multinomial(io.at("rng_probe.probs"), g);
  const at::Tensor expected = io.at("rng_probe.multinomial").reshape({-1});
  EXPECT_TRUE(at::equal(drawn, expected.to(at::kLong)))
      << "drawn " << drawn << "\nexpected " << expected;
  // A shared stream's categorical draws are the same.
  SampleRngs shared = SampleRngs::shared_stream(7, expected.size(0));
  EXPECT_TRUE(at::equal(shared.categorical(io.at("rng_probe.probs")), expected.to(at::kLong)));
}

}  // namespace
}  // namespace tessera
