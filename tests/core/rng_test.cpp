#include "tessera/core/rng.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"

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

TEST(Rng, BadInputIsAClearError) {
  EXPECT_THROW(SampleRngs(1, -1, 2), Error);
  SampleRngs rngs(1, 0, 2);
  EXPECT_THROW(rngs.generator(2), Error);
  EXPECT_THROW(rngs.categorical(at::ones({3, 4})), Error);
  EXPECT_THROW(rngs.categorical(at::zeros({2, 4})), Error);
  EXPECT_THROW(rngs.categorical(-at::ones({2, 4})), Error);
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
  // ../shared/parity/var-tiny/io.safetensors holds torch.empty(16).exponential_(generator=g) for
  // a CPU generator seeded with 7, drawn by the reference environment (torch 1.13).
  const char* env = std::getenv("TESSERA_PARITY_DIR");
  const std::filesystem::path dir =
      env ? std::filesystem::path(env) : std::filesystem::path(TESSERA_SOURCE_DIR) / ".." / "shared" / "parity" / "var-tiny";
  if (!std::filesystem::exists(dir / "io.safetensors")) GTEST_SKIP() << "no fixture at " << dir;
  const auto io = load_safetensors(dir / "io.safetensors");
  const at::Tensor expected = io.at("rng_probe.exponential");
  at::Generator g = make_cpu_generator(7);
  at::Tensor drawn = at::empty({expected.numel()}, at::kFloat).exponential_(1.0, g);
  EXPECT_TRUE(at::equal(drawn, expected.to(at::kFloat)))
      << "drawn " << drawn << "\nexpected " << expected;
}

}  // namespace
}  // namespace tessera
