// The discrete head against hand computation: every distribution is enumerated (not sampled) and
// compared with an independent float64 statement of the references' rules (Note [Token
// distribution]); draws are checked against the same per-sample uniforms replayed by hand.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <optional>
#include <vector>

#include <unistd.h>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/head/discrete_head.h"
#include "tessera/head/token_sampling.h"

namespace tessera {
namespace {

using Vec = std::vector<double>;

// --- the float64 reference --------------------------------------------------------------------------

Vec softmax_over(const Vec& logits, const std::vector<bool>& keep) {
  double top = -INFINITY;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (keep[i]) top = std::max(top, logits[i]);
  }
  Vec p(logits.size(), 0.0);
  double total = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (keep[i]) total += (p[i] = std::exp(logits[i] - top));
  }
  for (double& x : p) x /= total;
  return p;
}

// Guidance u + w·(c − u), temperature, top-k (keep >= k-th largest), top-p (keep a token when the
// mass ranked strictly above it is < p), softmax — written from the rules, not from the code.
Vec expected_distribution(const Vec& cond, const std::optional<Vec>& uncond, double weight,
                          double temperature, int64_t top_k, double top_p) {
  const size_t v = cond.size();
  Vec g(v);
  for (size_t i = 0; i < v; ++i) {
    g[i] = uncond ? (*uncond)[i] + weight * (cond[i] - (*uncond)[i]) : cond[i];
    g[i] /= temperature;
  }
  std::vector<bool> keep(v, true);
  if (top_k > 0) {
    Vec sorted = g;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const double kth = sorted[static_cast<size_t>(top_k) - 1];
    for (size_t i = 0; i < v; ++i) keep[i] = g[i] >= kth;
  }
  if (top_p < 1.0) {
    const Vec p = softmax_over(g, keep);
    std::vector<size_t> order(v);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return g[a] > g[b]; });
    double above = 0.0;
    std::vector<bool> nucleus(v, false);
    for (size_t i : order) {
      if (!keep[i]) continue;
      nucleus[i] = above < top_p;
      above += p[i];
    }
    keep = nucleus;
  }
  return softmax_over(g, keep);
}

at::Tensor rows_tensor(const std::vector<Vec>& rows) {
  at::Tensor t = at::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())},
                           at::kDouble);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t i = 0; i < rows[r].size(); ++i) t[r][i] = rows[r][i];
  }
  return t;
}

// Exact support (removed tokens are exactly 0, kept ones positive) and values to float32 rounding.
void expect_distribution(const at::Tensor& got_row, const Vec& expected, const std::string& what,
                         double tolerance = 5e-7) {
  at::Tensor got = got_row.to(at::kDouble);
  ASSERT_EQ(got.size(0), static_cast<int64_t>(expected.size())) << what;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double g = got[i].item<double>();
    if (expected[i] == 0.0) {
      EXPECT_EQ(g, 0.0) << what << ": token " << i << " should be filtered out";
    } else {
      EXPECT_GT(g, 0.0) << what << ": token " << i << " should survive";
      EXPECT_NEAR(g, expected[i], tolerance) << what << ": token " << i;
    }
  }
}

// Precondition of an exact comparison: no cumulative mass of the sorted, top-k-filtered tempered
// distribution lies within 1e-4 of p, so float32 rounding cannot flip the nucleus boundary.
void assert_clear_of_top_p_boundary(const Vec& cond, const std::optional<Vec>& uncond,
                                    double weight, double temperature, int64_t top_k, double p) {
  if (p >= 1.0) return;  // no nucleus
  const Vec dist = expected_distribution(cond, uncond, weight, temperature, top_k, 1.0);
  Vec sorted = dist;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  double cumulative = 0.0;
  for (double x : sorted) {
    cumulative += x;
    ASSERT_GT(std::abs(cumulative - p), 1e-4) << "test case too close to the top-p boundary";
  }
}

// --- token_distribution ---------------------------------------------------------------------------

const Vec kCond = {2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 1.5};
const Vec kUncond = {1.0, 1.5, 0.0, 0.5, -0.5, -2.0, 0.0};

TEST(TokenDistribution, TemperatureMatchesSoftmaxOfScaledLogits) {
  for (double temperature : {0.25, 0.7, 1.0, 1.9}) {
    at::Tensor got = token_distribution(rows_tensor({kCond}).to(at::kFloat), {}, 1.0, temperature, {});
    expect_distribution(got[0], expected_distribution(kCond, std::nullopt, 1.0, temperature, 0, 1.0),
                        "temperature " + std::to_string(temperature));
  }
}

TEST(TokenDistribution, TopKKeepsTheKLargestAndTiesAtTheKth) {
  for (int64_t k : {1, 2, 3, 6, 7}) {
    DiscreteSamplingOptions o;
    o.top_k = k;
    at::Tensor got = token_distribution(rows_tensor({kCond}).to(at::kFloat), {}, 1.0, 1.0, o);
    const Vec expected = expected_distribution(kCond, std::nullopt, 1.0, 1.0, k, 1.0);
    expect_distribution(got[0], expected, "top_k " + std::to_string(k));
    EXPECT_EQ(std::count_if(expected.begin(), expected.end(), [](double x) { return x > 0; }), k);
  }
  // Three logits tie at the 2nd largest: VAR's `logits < kth` keeps all three.
  const Vec tied = {1.0, 2.0, 2.0, 0.5, 2.0};
  DiscreteSamplingOptions o;
  o.top_k = 2;
  at::Tensor got = token_distribution(rows_tensor({tied}).to(at::kFloat), {}, 1.0, 1.0, o);
  expect_distribution(got[0], {0.0, 1.0 / 3, 1.0 / 3, 0.0, 1.0 / 3}, "ties");
}

TEST(TokenDistribution, TopPFollowsVarsRule) {
  for (double p : {0.05, 0.3, 0.5, 0.62, 0.8, 0.95, 0.999}) {
    assert_clear_of_top_p_boundary(kCond, std::nullopt, 1.0, 1.0, 0, p);
    DiscreteSamplingOptions o;
    o.top_p = p;
    at::Tensor got = token_distribution(rows_tensor({kCond}).to(at::kFloat), {}, 1.0, 1.0, o);
    expect_distribution(got[0], expected_distribution(kCond, std::nullopt, 1.0, 1.0, 0, p),
                        "top_p " + std::to_string(p));
  }
  // A tiny p keeps the top token alone (it always survives).
  DiscreteSamplingOptions o;
  o.top_p = 1e-6;
  at::Tensor got = token_distribution(rows_tensor({kCond}).to(at::kFloat), {}, 1.0, 1.0, o);
  expect_distribution(got[0], {1, 0, 0, 0, 0, 0, 0}, "tiny top_p");
}

TEST(TokenDistribution, HandComputedNucleus) {
  // probabilities 0.5, 0.25, 0.15, 0.1: with p = 0.7 the mass above the third token is 0.75 >= p,
  // so the nucleus is {0.5, 0.25} renormalised; with p = 0.8 the third token joins (0.75 < 0.8).
  const Vec logits = {std::log(0.5), std::log(0.25), std::log(0.15), std::log(0.1)};
  DiscreteSamplingOptions o;
  o.top_p = 0.7;
  at::Tensor got = token_distribution(rows_tensor({logits}), {}, 1.0, 1.0, o);
  expect_distribution(got[0], {2.0 / 3, 1.0 / 3, 0, 0}, "p = 0.7");
  o.top_p = 0.8;
  got = token_distribution(rows_tensor({logits}), {}, 1.0, 1.0, o);
  expect_distribution(got[0], {0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0}, "p = 0.8");
}

TEST(TokenDistribution, GuidanceThenTemperatureTopKTopP) {
  struct Case {
    double weight, temperature;
    int64_t top_k;
    double top_p;
  };
  const std::vector<Case> cases = {{0.0, 1.0, 0, 1.0},  {1.0, 1.0, 0, 1.0}, {2.5, 1.0, 0, 1.0},
                                   {4.0, 0.8, 4, 1.0},  {1.5, 1.3, 0, 0.7}, {3.0, 0.6, 5, 0.9},
                                   {1.75, 1.0, 3, 0.6}, {0.5, 2.0, 7, 0.85}};
  for (const Case& c : cases) {
    assert_clear_of_top_p_boundary(kCond, kUncond, c.weight, c.temperature, c.top_k, c.top_p);
    DiscreteSamplingOptions o;
    o.top_k = c.top_k;
    o.top_p = c.top_p;
    // Two rows: the case, and the same case with the halves swapped.
    at::Tensor got = token_distribution(rows_tensor({kCond, kUncond}).to(at::kFloat),
                                        rows_tensor({kUncond, kCond}).to(at::kFloat), c.weight,
                                        c.temperature, o);
    const std::string what = "w " + std::to_string(c.weight) + " T " +
                             std::to_string(c.temperature) + " k " + std::to_string(c.top_k) +
                             " p " + std::to_string(c.top_p);
    expect_distribution(got[0],
                        expected_distribution(kCond, kUncond, c.weight, c.temperature, c.top_k,
                                              c.top_p),
                        what);
    expect_distribution(got[1],
                        expected_distribution(kUncond, kCond, c.weight, c.temperature, c.top_k,
                                              c.top_p),
                        what + " (swapped)");
  }
}

TEST(TokenDistribution, OutOfRangeOptionsAreErrors) {
  at::Tensor logits = at::zeros({2, 5});
  DiscreteSamplingOptions o;
  EXPECT_THROW(token_distribution(logits, {}, 1.0, 0.0, o), Error);
  EXPECT_THROW(token_distribution(logits, {}, 1.0, -1.0, o), Error);
  o.top_k = 6;
  try {
    token_distribution(logits, {}, 1.0, 1.0, o);
    ADD_FAILURE() << "top_k 6 over a vocabulary of 5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_k must be in [0, 5]"), std::string::npos) << e.what();
  }
  o.top_k = 0;
  o.top_p = 0.0;
  EXPECT_THROW(token_distribution(logits, {}, 1.0, 1.0, o), Error);
  o.top_p = 1.01;
  EXPECT_THROW(token_distribution(logits, {}, 1.0, 1.0, o), Error);
  o.top_p = 1.0;
  EXPECT_THROW(token_distribution(logits, at::zeros({2, 4}), 2.0, 1.0, o), Error);
  EXPECT_THROW(token_distribution(logits, at::zeros({2, 5}), -1.0, 1.0, o), Error);
}

// --- draws ------------------------------------------------------------------------------------------

TEST(DrawTokens, InverseCdfUsesOneUniformPerPositionFromItsSample) {
  const int64_t samples = 3, positions = 4, vocab = 6;
  at::Tensor logits = at::randn({samples * positions, vocab}, make_cpu_generator(5));
  DiscreteSamplingOptions o;
  o.top_k = 4;
  at::Tensor dist = token_distribution(logits, {}, 1.0, 1.0, o);
  SampleRngs rngs(77, 0, samples);
  const TokenDraw draw = draw_tokens(dist, /*gumbel_max=*/false, rngs);

  // Replay: sample b's uniforms, and the first token whose float64 CDF exceeds u.
  SampleRngs replay(77, 0, samples);
  at::Tensor u = replay.uniform({positions}).to(at::kDouble);
  at::Tensor p = dist.to(at::kDouble);
  for (int64_t b = 0; b < samples; ++b) {
    for (int64_t t = 0; t < positions; ++t) {
      const int64_t row = b * positions + t;
      const double target = u[b][t].item<double>() * p[row].sum().item<double>();
      double cdf = 0.0;
      int64_t expected = -1;
      for (int64_t i = 0; i < vocab && expected < 0; ++i) {
        cdf += p[row][i].item<double>();
        if (cdf > target) expected = i;
      }
      EXPECT_EQ(draw.ids[row].item<int64_t>(), expected) << "row " << row;
      EXPECT_GT(p[row][expected].item<double>(), 0.0);
      EXPECT_EQ(draw.probabilities[row].item<float>(), dist[row][expected].item<float>());
      EXPECT_NEAR(draw.log_probabilities[row].item<double>(),
                  std::log(dist[row][expected].item<double>()), 1e-6);
    }
  }
}

// More rows than one block (Note [Token draws in row blocks]: 1,024), with blocks that cut through
// samples: each row's distribution equals that row computed alone, and each draw the float64
// inverse CDF of its own uniform, replayed row by row.
TEST(DrawTokens, RowBlocksKeepEveryRowsDistributionAndDraw) {
  const int64_t samples = 3, positions = 900, vocab = 8;
  const at::Tensor logits = at::randn({samples * positions, vocab}, make_cpu_generator(8));
  const at::Tensor uncond = at::randn({samples * positions, vocab}, make_cpu_generator(9));
  DiscreteSamplingOptions o;
  o.top_k = 6;
  o.top_p = 0.9;
  const at::Tensor dist = token_distribution(logits, uncond, 2.0, 0.8, o);
  for (const int64_t row : {0, 1023, 1024, 1500, 2047, 2048, 2699}) {
    const at::Tensor alone = token_distribution(logits.slice(0, row, row + 1),
                                                uncond.slice(0, row, row + 1), 2.0, 0.8, o);
    EXPECT_TRUE(at::equal(dist.slice(0, row, row + 1), alone)) << "row " << row;
  }
  SampleRngs rngs(31, 0, samples);
  const TokenDraw draw = draw_tokens(dist, /*gumbel_max=*/false, rngs);
  SampleRngs replay(31, 0, samples);
  const at::Tensor u = replay.uniform({positions}).to(at::kDouble).reshape({-1});
  const at::Tensor p = dist.to(at::kDouble);
  const auto pa = p.accessor<double, 2>();
  const auto ua = u.accessor<double, 1>();
  const auto ids = draw.ids.accessor<int64_t, 1>();
  for (int64_t row = 0; row < samples * positions; ++row) {
    double total = 0.0;
    for (int64_t i = 0; i < vocab; ++i) total += pa[row][i];
    const double target = ua[row] * total;
    double cdf = 0.0;
    int64_t expected = -1;
    for (int64_t i = 0; i < vocab && expected < 0; ++i) {
      cdf += pa[row][i];
      if (cdf > target) expected = i;
    }
    ASSERT_EQ(ids[row], expected) << "row " << row;
  }
}

TEST(DrawTokens, GumbelMaxIsArgmaxOfLogProbabilityPlusGumbel) {
  const int64_t samples = 2, positions = 3, vocab = 5;
  at::Tensor logits = at::randn({samples * positions, vocab}, make_cpu_generator(6));
  DiscreteSamplingOptions o;
  o.top_p = 0.8;
  at::Tensor dist = token_distribution(logits, {}, 1.0, 1.0, o);
  SampleRngs rngs(9, 0, samples);
  const TokenDraw draw = draw_tokens(dist, /*gumbel_max=*/true, rngs);
  SampleRngs replay(9, 0, samples);
  at::Tensor g = replay.gumbel({positions, vocab}).reshape({samples * positions, vocab});
  for (int64_t row = 0; row < samples * positions; ++row) {
    int64_t best = -1;
    double best_score = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) {
      const double prob = dist[row][i].item<double>();
      if (prob == 0.0) continue;
      const double score = std::log(static_cast<float>(prob)) + g[row][i].item<double>();
      if (score > best_score) best_score = score, best = i;
    }
    EXPECT_EQ(draw.ids[row].item<int64_t>(), best) << row;
  }
}

TEST(DrawTokens, NeverChoosesFilteredTokens) {
  at::Tensor logits = at::randn({64, 10}, make_cpu_generator(3));
  DiscreteSamplingOptions o;
  o.top_k = 3;
  o.top_p = 0.7;
  at::Tensor dist = token_distribution(logits, {}, 1.0, 1.0, o);
  for (bool gumbel : {false, true}) {
    SampleRngs rngs(1, 0, 8);
    for (int rep = 0; rep < 20; ++rep) {
      const TokenDraw draw = draw_tokens(dist, gumbel, rngs);
      EXPECT_TRUE((dist.gather(1, draw.ids.unsqueeze(1)) > 0).all().item<bool>());
    }
  }
  SampleRngs three(1, 0, 3);
  EXPECT_THROW(draw_tokens(dist, false, three), Error);  // 64 rows over 3 samples
}

// --- the head ----------------------------------------------------------------------------------------

// A head whose projection is set by hand: logits = W·h + b.
struct HandSetHead {
  DiscreteHeadConfig config;
  at::Tensor weight, bias;
  std::unique_ptr<DiscreteHead> head;

  HandSetHead(int64_t width, int64_t vocab) {
    config.width = width;
    config.vocab_size = vocab;
    head = std::make_unique<DiscreteHead>(config, 1);
    weight = at::randn({vocab, width}, make_cpu_generator(11), at::kDouble);
    bias = at::randn({vocab}, make_cpu_generator(12), at::kDouble);
    head->load_state_dict({{"head.weight", weight.to(at::kFloat)}, {"head.bias", bias.to(at::kFloat)}});
  }
  Vec logits(const at::Tensor& hidden_row) const {
    at::Tensor l = at::matmul(weight.to(at::kFloat).to(at::kDouble), hidden_row.to(at::kDouble)) +
                   bias.to(at::kFloat).to(at::kDouble);
    return Vec(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
  }
};

TEST(DiscreteHead, DistributionThroughTheProjectionMatchesHandComputation) {
  HandSetHead h(6, 8);
  at::Tensor hidden = at::randn({6, 6}, make_cpu_generator(13));  // 3 cond rows, 3 uncond rows
  HeadSamplingOptions options;
  options.temperature = 0.9;
  options.discrete.top_k = 6;
  options.discrete.top_p = 0.9;
  GenerationProgress progress;
  progress.scale = 2;
  progress.num_scales = 5;
  const Guidance guidance = Guidance::var_scale_ramp(2.0);  // w = 1 + 2·2/4 = 2
  at::Tensor dist = h.head->distribution(hidden, guidance, options, {progress, {}});
  ASSERT_EQ(dist.size(0), 3);
  for (int64_t r = 0; r < 3; ++r) {
    const Vec c = h.logits(hidden[r]);
    const Vec u = h.logits(hidden[r + 3]);
    assert_clear_of_top_p_boundary(c, u, 2.0, 0.9, 6, 0.9);
    // The head computes its logits in float32: 5e-6 covers their rounding.
    expect_distribution(dist[r], expected_distribution(c, u, 2.0, 0.9, 6, 0.9),
                        "row " + std::to_string(r), 5e-6);
  }
  // Unguided: the hidden rows are all conditional.
  at::Tensor plain = h.head->distribution(hidden, Guidance::none(), options);
  ASSERT_EQ(plain.size(0), 6);
  expect_distribution(plain[4], expected_distribution(h.logits(hidden[4]), std::nullopt, 1.0, 0.9, 6, 0.9),
                      "unguided", 5e-6);
}

TEST(DiscreteHead, AdalnProjectionMatchesVarsAdaLNBeforeHead) {
  DiscreteHeadConfig config;
  config.width = 5;
  config.vocab_size = 7;
  config.projection = DiscreteProjection::adaln;
  config.condition_width = 3;
  DiscreteHead head(config, 2);
  at::Tensor ada_w = at::randn({10, 3}, make_cpu_generator(1), at::kDouble);
  at::Tensor ada_b = at::randn({10}, make_cpu_generator(2), at::kDouble);
  at::Tensor w = at::randn({7, 5}, make_cpu_generator(3), at::kDouble);
  at::Tensor b = at::randn({7}, make_cpu_generator(4), at::kDouble);
  head.load_state_dict({{"head_nm.ada_lin.1.weight", ada_w.to(at::kFloat)},
                        {"head_nm.ada_lin.1.bias", ada_b.to(at::kFloat)},
                        {"head.weight", w.to(at::kFloat)},
                        {"head.bias", b.to(at::kFloat)}});
  at::Tensor hidden = at::randn({4, 5}, make_cpu_generator(5), at::kDouble);
  at::Tensor cond = at::randn({4, 3}, make_cpu_generator(6), at::kDouble);
  at::Tensor got = head.logits(hidden.to(at::kFloat), cond.to(at::kFloat)).to(at::kDouble);
  for (int64_t r = 0; r < 4; ++r) {
    // VAR: (scale, shift) = ada_lin(SiLU(cond)).view(2, C); LN(h)·(1 + scale) + shift; head.
    std::vector<double> silu(3), ada(10), x(5);
    for (int j = 0; j < 3; ++j) {
      const double c = cond[r][j].item<double>();
      silu[j] = c / (1.0 + std::exp(-c));
    }
    for (int i = 0; i < 10; ++i) {
      ada[i] = static_cast<float>(ada_b[i].item<double>());
      for (int j = 0; j < 3; ++j) ada[i] += static_cast<float>(ada_w[i][j].item<double>()) * silu[j];
    }
    double mean = 0, var = 0;
    for (int j = 0; j < 5; ++j) mean += hidden[r][j].item<double>() / 5;
    for (int j = 0; j < 5; ++j) var += std::pow(hidden[r][j].item<double>() - mean, 2) / 5;
    for (int j = 0; j < 5; ++j) {
      x[j] = (hidden[r][j].item<double>() - mean) / std::sqrt(var + 1e-6) * (1 + ada[j]) + ada[5 + j];
    }
    for (int v = 0; v < 7; ++v) {
      double logit = static_cast<float>(b[v].item<double>());
      for (int j = 0; j < 5; ++j) logit += static_cast<float>(w[v][j].item<double>()) * x[j];
      EXPECT_NEAR(got[r][v].item<double>(), logit, 2e-5) << r << "," << v;
    }
  }
  EXPECT_THROW(head.logits(hidden.to(at::kFloat)), Error);  // adaln needs its condition
}

TEST(DiscreteHead, CrossEntropyWithLabelSmoothingAndWeights) {
  DiscreteHeadConfig config;
  config.width = 4;
  config.vocab_size = 5;
  config.label_smoothing = 0.1;
  DiscreteHead head(config, 3);
  at::Tensor hidden = at::randn({6, 4}, make_cpu_generator(7));
  at::Tensor targets = at::tensor({0, 4, 2, 2, 1, 3}, at::kLong);
  at::Tensor weights = at::tensor({1.0, 0.0, 2.0, 1.0, 0.5, 1.0}, at::kFloat);
  const HeadLoss loss = head.loss(hidden, targets, {weights, {}, {}});
  at::Tensor logits = head.logits(hidden).detach().to(at::kDouble);
  double numerator = 0, denominator = 0;
  for (int64_t r = 0; r < 6; ++r) {
    // −Σ_j q_j log p_j with q = (1 − ε)·onehot + ε/V.
    at::Tensor logp = logits[r].log_softmax(0);
    double ce = 0;
    for (int64_t j = 0; j < 5; ++j) {
      const double q = (j == targets[r].item<int64_t>() ? 0.9 : 0.0) + 0.1 / 5;
      ce -= q * logp[j].item<double>();
    }
    numerator += weights[r].item<double>() * ce;
    denominator += weights[r].item<double>();
  }
  EXPECT_NEAR(loss.loss.item<double>(), numerator / denominator, 1e-5);
  ASSERT_EQ(loss.terms.size(), 1u);
  EXPECT_EQ(loss.terms[0].first, "cross_entropy");
  loss.loss.backward();
  for (const auto& p : head.parameters()) EXPECT_TRUE(p.grad().defined());
  EXPECT_THROW(head.loss(hidden, at::tensor({0, 1, 2, 3, 4, 5}, at::kLong)), Error);  // id 5
  EXPECT_THROW(head.loss(hidden, at::zeros({6}, at::kFloat)), Error);
}

TEST(DiscreteHead, SampleIsTheSameAloneOrInABatchOfEight) {
  DiscreteHeadConfig config;
  config.width = 16;
  config.vocab_size = 50;
  DiscreteHead head(config, 4);
  const int64_t batch = 8, positions = 5;
  at::Tensor hidden = at::randn({2 * batch * positions, 16}, make_cpu_generator(8)) * 20;
  HeadSamplingOptions options;
  options.temperature = 1.3;
  options.discrete.top_k = 20;
  options.discrete.top_p = 0.9;
  for (bool gumbel : {false, true}) {
    options.discrete.gumbel_max = gumbel;
    SampleRngs all(2024, 0, batch);
    const HeadSample together = head.sample(hidden, Guidance::constant(3.0), options, all);
    ASSERT_EQ(together.values.size(0), batch * positions);
    for (int64_t i = 0; i < batch; ++i) {
      at::Tensor rows = at::cat({hidden.narrow(0, i * positions, positions),
                                 hidden.narrow(0, (batch + i) * positions, positions)});
      SampleRngs alone(2024, i, 1);
      const HeadSample single = head.sample(rows, Guidance::constant(3.0), options, alone);
      EXPECT_TRUE(single.values.equal(together.values.narrow(0, i * positions, positions)))
          << "sample " << i << (gumbel ? " (Gumbel)" : "");
      EXPECT_TRUE(at::allclose(single.probabilities,
                               together.probabilities.narrow(0, i * positions, positions), 1e-5,
                               1e-7));
    }
  }
}

TEST(DiscreteHead, OptionsOutOfRangeAreErrors) {
  DiscreteHeadConfig config;
  config.width = 4;
  config.vocab_size = 10;
  DiscreteHead head(config);
  at::Tensor hidden = at::zeros({4, 4});
  SampleRngs rngs(0, 0, 2);
  auto sample_with = [&](auto mutate) {
    HeadSamplingOptions o;
    mutate(o);
    head.sample(hidden, Guidance::none(), o, rngs);
  };
  EXPECT_THROW(sample_with([](auto& o) { o.temperature = 0; }), Error);
  EXPECT_THROW(sample_with([](auto& o) { o.temperature = -0.5; }), Error);
  EXPECT_THROW(sample_with([](auto& o) { o.discrete.top_p = 0; }), Error);
  EXPECT_THROW(sample_with([](auto& o) { o.discrete.top_p = 2; }), Error);
  EXPECT_THROW(sample_with([](auto& o) { o.discrete.top_k = 11; }), Error);
  EXPECT_NO_THROW(sample_with([](auto& o) { o.discrete.top_k = 10; }));
  HeadSamplingOptions o;
  EXPECT_THROW(head.sample(hidden, Guidance::constant(-1.0), o, rngs), Error);
  Guidance negative;
  negative.kind = GuidanceKind::constant;
  negative.scale = -2;
  EXPECT_THROW(head.sample(hidden, negative, o, rngs), Error);
  EXPECT_THROW(head.sample(at::zeros({3, 4}), Guidance::constant(2.0), o, rngs), Error);  // odd
  EXPECT_THROW(head.sample(at::zeros({3, 4}), Guidance::none(), o, rngs), Error);  // 3 rows / 2
  EXPECT_THROW(head.sample(at::zeros({4, 5}), Guidance::none(), o, rngs), Error);  // width
  DiscreteHeadConfig bad = config;
  bad.vocab_size = 0;
  EXPECT_THROW(DiscreteHead{bad}, Error);
  bad = config;
  bad.projection = DiscreteProjection::adaln;
  EXPECT_THROW(DiscreteHead{bad}, Error);  // no condition width
}

TEST(DiscreteHead, SavesAndLoadsByParameterName) {
  DiscreteHeadConfig config;
  config.width = 6;
  config.vocab_size = 9;
  config.projection = DiscreteProjection::adaln;
  config.condition_width = 4;
  config.bias = false;
  DiscreteHead head(config, 21);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : head.state_dict()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"head.weight", "head_nm.ada_lin.1.bias",
                                             "head_nm.ada_lin.1.weight"}));
  const auto path = std::filesystem::temp_directory_path() /
                    ("tessera_discrete_head_" + std::to_string(::getpid()) + ".safetensors");
  head.save(path);
  std::unique_ptr<Head> loaded = load_head(path);
  ASSERT_EQ(loaded->kind(), HeadKind::discrete);
  EXPECT_EQ(loaded->vocab_size(), 9);
  for (const auto& [name, tensor] : head.state_dict()) {
    EXPECT_TRUE(loaded->state_dict().at(name).equal(tensor)) << name;
  }
  DiscreteHead fresh(config, 99);
  fresh.load(path);
  at::Tensor hidden = at::randn({3, 6});
  at::Tensor cond = at::randn({3, 4});
  EXPECT_TRUE(fresh.logits(hidden, cond).equal(head.logits(hidden, cond)));
  std::filesystem::remove(path);

  DiscreteHeadConfig other = config;
  other.vocab_size = 10;
  DiscreteHead wrong(other);
  EXPECT_THROW(wrong.load_state_dict(head.state_dict()), Error);
  EXPECT_THROW(head.load_state_dict({}), Error);
}

}  // namespace
}  // namespace tessera
