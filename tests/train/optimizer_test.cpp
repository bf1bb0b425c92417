// AdamW and Lion against steps computed by hand and against float64 loops written from the papers'
// formulas (not from the implementation).

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/train/adamw.h"
#include "tessera/train/lion.h"

namespace tessera {
namespace {

at::Tensor parameter(std::vector<float> values, std::vector<int64_t> shape) {
  return at::tensor(values).reshape(shape).requires_grad_(true);
}

void set_grad(const at::Tensor& p, std::vector<float> values) {
  p.mutable_grad() = at::tensor(values).reshape(p.sizes());
}

OptimizerConfig adamw_config(double lr, double decay) {
  OptimizerConfig c;
  c.kind = OptimizerKind::adamw;
  c.learning_rate = lr;
  c.weight_decay = decay;
  return c;
}

TEST(AdamW, FirstStepByHand) {
  // θ = 1, g = 0.5, lr 0.1, λ 0.1: θ ← 0.99; m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25;
  // θ ← 0.99 − 0.1·0.5/(0.5 + 1e-8) = 0.89000000199...
  OptimizerConfig c = adamw_config(0.1, 0.1);
  c.no_weight_decay_1d = false;
  AdamW adamw(c);
  at::Tensor p = parameter({1.0f}, {1});
  set_grad(p, {0.5f});
  adamw.step({{"w", p}}, 0.1);
  EXPECT_NEAR(p.item<double>(), 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 2e-7);  // float32
  const auto state = adamw.state_dict();
  EXPECT_NEAR(state.at("w.exp_avg").item<double>(), 0.05, 1e-9);
  EXPECT_NEAR(state.at("w.exp_avg_sq").item<double>(), 0.00025, 1e-10);
  EXPECT_EQ(state.at("w.step").item<double>(), 1.0);
}

// The AdamW update from the paper / torch docs in float64.
struct ReferenceAdamW {
  double beta1, beta2, eps, lr, decay;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& theta, const std::vector<double>& g) {
    if (m.empty()) m.assign(theta.size(), 0.0), v.assign(theta.size(), 0.0);
    ++t;
    for (size_t i = 0; i < theta.size(); ++i) {
      theta[i] -= lr * decay * theta[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(beta1, t));
      const double v_hat = v[i] / (1 - std::pow(beta2, t));
      theta[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

TEST(AdamW, MatchesFloat64FormulaOverSeveralSteps) {
  OptimizerConfig c = adamw_config(0.01, 0.05);
  c.beta1 = 0.8;
  c.beta2 = 0.95;
  c.eps = 1e-6;
  AdamW adamw(c);
  at::Tensor w = parameter({0.5f, -1.0f, 2.0f, 0.25f}, {2, 2});
  at::Tensor b = parameter({0.1f, -0.2f}, {2});  // 1-D: no weight decay
  ReferenceAdamW ref_w{0.8, 0.95, 1e-6, 0, 0.05, {}, {}};
  ReferenceAdamW ref_b{0.8, 0.95, 1e-6, 0, 0.0, {}, {}};
  std::vector<double> tw = {0.5, -1.0, 2.0, 0.25}, tb = {0.1, -0.2};
  const std::vector<std::vector<float>> gw = {
      {0.3f, -0.1f, 0.0f, 2.0f}, {-0.5f, 0.2f, 0.1f, 1.0f}, {0.05f, 0.05f, -1.0f, -3.0f}};
  const std::vector<std::vector<float>> gb = {{1.0f, -1.0f}, {0.5f, 0.0f}, {-2.0f, 0.25f}};
  const std::vector<double> lrs = {0.01, 0.02, 0.005};
  for (size_t s = 0; s < lrs.size(); ++s) {
    set_grad(w, gw[s]);
    set_grad(b, gb[s]);
    adamw.step({{"w", w}, {"b", b}}, lrs[s]);
    ref_w.lr = ref_b.lr = lrs[s];
    ref_w.step(tw, {gw[s].begin(), gw[s].end()});
    ref_b.step(tb, {gb[s].begin(), gb[s].end()});
  }
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(w.flatten()[i].item<double>(), tw[i], 2e-6) << i;
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(b[i].item<double>(), tb[i], 2e-6) << i;
}

TEST(AdamW, SkipsParametersWithoutGradient) {
  AdamW adamw(adamw_config(0.1, 0.1));
  at::Tensor p = parameter({1.0f, 2.0f}, {1, 2});
  adamw.step({{"p", p}}, 0.1);
  EXPECT_TRUE(at::equal(p, at::tensor({1.0f, 2.0f}).reshape({1, 2})));
  EXPECT_TRUE(adamw.state_dict().empty());
}

TEST(AdamW, StateRoundTripsAndRejectsBadState) {
  AdamW a(adamw_config(0.1, 0.0));
  at::Tensor p = parameter({1.0f, 2.0f}, {2});
  set_grad(p, {0.1f, 0.2f});
  a.step({{"p", p}}, 0.1);
  AdamW b(adamw_config(0.1, 0.0));
  b.load_state_dict(a.state_dict(), {{"p", p}});
  at::Tensor q = p.detach().clone().requires_grad_(true);
  set_grad(p, {0.3f, -0.2f});
  set_grad(q, {0.3f, -0.2f});
  a.step({{"p", p}}, 0.1);
  b.step({{"p", q}}, 0.1);
  EXPECT_TRUE(at::equal(p, q));
  EXPECT_THROW(b.load_state_dict({{"nope.exp_avg", at::zeros({2})}}, {{"p", p}}), Error);
  EXPECT_THROW(b.load_state_dict({{"p.momentum", at::zeros({2})}}, {{"p", p}}), Error);
  EXPECT_THROW(b.load_state_dict({{"p.exp_avg", at::zeros({3})},
                                  {"p.exp_avg_sq", at::zeros({3})},
                                  {"p.step", at::ones({})}},
                                 {{"p", p}}),
               Error);
  EXPECT_THROW(b.load_state_dict({{"p.exp_avg", at::zeros({2})}}, {{"p", p}}), Error);
}

TEST(Lion, ThreeStepsByHand) {
  // θ = 1, lr 0.1, λ 0.1, β1 0.9, β2 0.99 (defaults).
  // g = 0.5:  c = 0.05 > 0 → θ = 0.99 − 0.1 = 0.89; m = 0.005
  // g = −0.1: c = 0.0045 − 0.01 < 0 → θ = 0.89·0.99 + 0.1 = 0.9811; m = 0.00495 − 0.001 = 0.00395
  // g = 0:    c = 0.003555 > 0 → θ = 0.9811·0.99 − 0.1 = 0.871289; m = 0.0039105
  OptimizerConfig c;
  c.kind = OptimizerKind::lion;
  c.weight_decay = 0.1;
  c.no_weight_decay_1d = false;
  Lion lion(c);
  at::Tensor p = parameter({1.0f}, {1});
  const std::vector<float> grads = {0.5f, -0.1f, 0.0f};
  const std::vector<double> thetas = {0.89, 0.9811, 0.871289};
  const std::vector<double> moments = {0.005, 0.00395, 0.0039105};
  for (size_t s = 0; s < grads.size(); ++s) {
    set_grad(p, {grads[s]});
    lion.step({{"p", p}}, 0.1);
    EXPECT_NEAR(p.item<double>(), thetas[s], 1e-6) << "step " << s;
    EXPECT_NEAR(lion.state_dict().at("p.exp_avg").item<double>(), moments[s], 1e-8) << s;
  }
}

TEST(Lion, MatchesFloat64FormulaAndSignOfZero) {
  OptimizerConfig c;
  c.kind = OptimizerKind::lion;
  c.weight_decay = 0.5;
  c.beta1 = 0.8;
  Lion lion(c);
  at::Tensor w = parameter({0.5f, -1.0f, 2.0f, 0.0f}, {2, 2});
  std::vector<double> theta = {0.5, -1.0, 2.0, 0.0}, m(4, 0.0);
  const std::vector<std::vector<float>> grads = {
      {0.3f, -0.1f, 0.0f, 2.0f}, {-0.5f, 0.2f, 0.0f, 1.0f}, {0.05f, 0.05f, 0.0f, -3.0f}};
  for (const auto& g : grads) {
    set_grad(w, g);
    lion.step({{"w", w}}, 0.01);
    for (size_t i = 0; i < 4; ++i) {
      const double c_i = 0.8 * m[i] + 0.2 * g[i];
      const double u = c_i > 0 ? 1.0 : (c_i < 0 ? -1.0 : 0.0);
      theta[i] -= 0.01 * (u + 0.5 * theta[i]);
      m[i] = 0.99 * m[i] + 0.01 * g[i];
    }
  }
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(w.flatten()[i].item<double>(), theta[i], 1e-6) << i;
}

TEST(OptimizerConfig, DefaultsAndValidation) {
  OptimizerConfig c;
  EXPECT_EQ(c.beta2_or_default(), 0.999);
  c.kind = OptimizerKind::lion;
  EXPECT_EQ(c.beta1_or_default(), 0.9);
  EXPECT_EQ(c.beta2_or_default(), 0.99);
  c.beta1 = 1.0;
  EXPECT_THROW(c.validate(), Error);
  EXPECT_THROW(config_from_json<OptimizerConfig>(nlohmann::json{{"kind", "adam"}}), Error);
  const auto parsed = config_from_json<OptimizerConfig>(
      nlohmann::json{{"kind", "lion"}, {"learning_rate", 3e-4}, {"beta2", 0.98}});
  EXPECT_EQ(parsed.kind, OptimizerKind::lion);
  EXPECT_EQ(parsed.beta2_or_default(), 0.98);
  EXPECT_THROW(make_optimizer(adamw_config(-1.0, 0.0)), Error);
}

}  // namespace
}  // namespace tessera
