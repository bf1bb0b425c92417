// Rotary and sinusoidal encodings against rotations and formulas computed by hand.

#include "tessera/nn/position_encoding.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {
namespace {

// x rotated pair by pair by the given angles, in double.
std::vector<double> rotate_by_hand(const std::vector<double>& x,
                                   const std::vector<double>& angles) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < angles.size(); ++i) {
    const double c = std::cos(angles[i]), s = std::sin(angles[i]);
    out[2 * i] = x[2 * i] * c - x[2 * i + 1] * s;
    out[2 * i + 1] = x[2 * i + 1] * c + x[2 * i] * s;
  }
  return out;
}

at::Tensor as_tensor(const std::vector<double>& v) {
  return at::tensor(v, at::kDouble).to(at::kFloat);
}

const std::vector<double> kVector = {0.3, -1.2, 0.7, 2.0, -0.4, 0.9, 1.5, -0.6};

TEST(PositionEncodingTest, TwoDimensionalRopeMatchesHandRotation) {
  // head dim 8, grid 4, base 100, one prefix token. Pairs 0, 1 rotate by row·f_j, pairs 2, 3 by
  // col·f_j, with f_j = 100^(−2j/4): f_0 = 1, f_1 = 0.1.
  RopeSpec spec{RopeKind::rope_2d, 8, 100.0, /*prefix=*/1, /*grid=*/4, PrefixRotation::zero};
  struct Case {
    int64_t position, row, col;
  };
  for (const Case& c : {Case{1, 0, 0}, Case{7, 1, 2}, Case{12, 2, 3}, Case{16, 3, 3}}) {
    const RotaryTable table = rotary_table(spec, at::tensor(std::vector<int64_t>{c.position}));
    const at::Tensor out = apply_rotary(as_tensor(kVector).view({1, 8}), table);
    const double r = static_cast<double>(c.row), k = static_cast<double>(c.col);
    const std::vector<double> expected = rotate_by_hand(kVector, {r, 0.1 * r, k, 0.1 * k});
    for (int64_t i = 0; i < 8; ++i) {
      EXPECT_NEAR(out[0][i].item<double>(), expected[i], 1e-5)
          << "position " << c.position << " element " << i;
    }
  }
  // The prefix token: zero rotation (cos = sin = 0) maps the vector to zero, as LlamaGen does.
  const RotaryTable prefix = rotary_table(spec, at::tensor(std::vector<int64_t>{0}));
  EXPECT_EQ(apply_rotary(as_tensor(kVector).view({1, 8}), prefix).abs().max().item<double>(), 0.0);
  // With the identity convention it is unchanged.
  spec.prefix_rotation = PrefixRotation::identity;
  const RotaryTable identity = rotary_table(spec, at::tensor(std::vector<int64_t>{0}));
  EXPECT_TRUE(at::allclose(apply_rotary(as_tensor(kVector).view({1, 8}), identity),
                           as_tensor(kVector).view({1, 8})));
  // Beyond the grid is an error.
  spec.prefix_rotation = PrefixRotation::zero;
  EXPECT_THROW(rotary_table(spec, at::tensor(std::vector<int64_t>{17})), Error);
}

TEST(PositionEncodingTest, OneDimensionalRopeMatchesHandRotation) {
  // head dim 8, base 10000: θ_i = t·10000^(−2i/8), t = position − prefix.
  RopeSpec spec{RopeKind::rope_1d, 8, 10000.0, /*prefix=*/2, 0, PrefixRotation::zero};
  const RotaryTable table = rotary_table(spec, at::tensor(std::vector<int64_t>{2, 5, 40}));
  const at::Tensor x = as_tensor(kVector).view({1, 8}).expand({3, 8});
  const at::Tensor out = apply_rotary(x, table);
  const std::vector<double> ts = {0, 3, 38};
  for (size_t row = 0; row < ts.size(); ++row) {
    std::vector<double> angles;
    for (int i = 0; i < 4; ++i) angles.push_back(ts[row] * std::pow(10000.0, -2.0 * i / 8.0));
    const std::vector<double> expected = rotate_by_hand(kVector, angles);
    for (int64_t i = 0; i < 8; ++i) {
      EXPECT_NEAR(out[static_cast<int64_t>(row)][i].item<double>(), expected[i], 1e-5);
    }
  }
}

TEST(PositionEncodingTest, RotaryPreservesDtypeAndBroadcastsOverHeads) {
  RopeSpec spec{RopeKind::rope_2d, 32, 10000.0, 1, 8, PrefixRotation::zero};
  const at::Tensor positions = at::arange(0, 10, at::kLong).unsqueeze(0);  // [1, 10]
  RotaryTable table = rotary_table(spec, positions);
  table.cos = table.cos.unsqueeze(1);
  table.sin = table.sin.unsqueeze(1);
  const at::Tensor q = at::randn({2, 3, 10, 32}).to(at::kBFloat16);
  const at::Tensor out = apply_rotary(q, table);
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  EXPECT_EQ(out.sizes(), q.sizes());
  // Rotations preserve each pair's norm (the prefix row is zeroed).
  const at::Tensor norms_in = q.to(at::kFloat).slice(2, 1).norm(2, -1);
  const at::Tensor norms_out = out.to(at::kFloat).slice(2, 1).norm(2, -1);
  EXPECT_TRUE(at::allclose(norms_in, norms_out, 2e-2, 2e-2));
}

TEST(PositionEncodingTest, SinusoidalEmbeddingMatchesFormula) {
  const at::Tensor e = sinusoidal_embedding(at::tensor(std::vector<int64_t>{0, 3}), 6);
  ASSERT_EQ(e.sizes(), (at::IntArrayRef{2, 6}));
  for (int i = 0; i < 3; ++i) {
    const double omega = std::pow(10000.0, -static_cast<double>(i) / 3.0);
    EXPECT_NEAR(e[0][i].item<double>(), 0.0, 1e-7);
    EXPECT_NEAR(e[0][3 + i].item<double>(), 1.0, 1e-7);
    EXPECT_NEAR(e[1][i].item<double>(), std::sin(3 * omega), 1e-6);
    EXPECT_NEAR(e[1][3 + i].item<double>(), std::cos(3 * omega), 1e-6);
  }
  EXPECT_THROW(sinusoidal_embedding(at::tensor(std::vector<int64_t>{0}), 5), Error);
}

}  // namespace
}  // namespace tessera
