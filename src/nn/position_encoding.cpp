#include "tessera/nn/position_encoding.h"

#include <ATen/ATen.h>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

namespace {

// base^(−2j/dim) for j < count: the per-pair frequencies of a rotary half (or whole) of `dim`.
at::Tensor inverse_frequencies(int64_t count, int64_t dim, double base, at::Device device) {
  const at::Tensor j = at::arange(count, at::TensorOptions().dtype(at::kDouble).device(device));
  return at::pow(base, j * (-2.0 / static_cast<double>(dim))).to(at::kFloat);
}

}  // namespace

RotaryTable rotary_table(const RopeSpec& spec, const at::Tensor& positions) {
  TESSERA_CHECK(spec.kind != RopeKind::none, "rotary_table: the rope kind is none");
  TESSERA_CHECK(positions.defined() && !at::isFloatingType(positions.scalar_type()),
                "rotary_table: positions must be an integer tensor");
  TESSERA_CHECK(spec.base > 0, "rotary_table: base must be > 0, got {}", spec.base);
  TESSERA_CHECK(spec.prefix >= 0, "rotary_table: prefix must be >= 0, got {}", spec.prefix);
  const int64_t d = spec.head_dim;
  const at::Tensor pos = positions.to(at::kLong);
  const at::Tensor t = (pos - spec.prefix).clamp_min(0);  // index after the prefix
  at::Tensor angles;
  if (spec.kind == RopeKind::rope_1d) {
    TESSERA_CHECK(d >= 2 && d % 2 == 0, "rotary_table: 1D rope needs an even head dim, got {}", d);
    const at::Tensor f = inverse_frequencies(d / 2, d, spec.base, pos.device());
    angles = t.to(at::kFloat).unsqueeze(-1) * f;
  } else {
    TESSERA_CHECK(d >= 4 && d % 4 == 0,
                  "rotary_table: 2D rope needs a head dim divisible by 4, got {}", d);
    TESSERA_CHECK(spec.grid >= 1, "rotary_table: 2D rope needs grid >= 1, got {}", spec.grid);
    if (pos.numel() > 0) {
      const int64_t last = t.max().item<int64_t>();
      TESSERA_CHECK(last < spec.grid * spec.grid,
                    "rotary_table: token {} after the prefix lies outside the {}x{} grid", last,
                    spec.grid, spec.grid);
    }
    const at::Tensor f = inverse_frequencies(d / 4, d / 2, spec.base, pos.device());
    const at::Tensor row = at::div(t, spec.grid, "floor").to(at::kFloat).unsqueeze(-1);
    const at::Tensor col = at::remainder(t, spec.grid).to(at::kFloat).unsqueeze(-1);
    angles = at::cat({row * f, col * f}, -1);
  }
  RotaryTable table{at::cos(angles), at::sin(angles)};
  if (spec.prefix > 0) {
    const at::Tensor is_prefix = (pos < spec.prefix).unsqueeze(-1);
    // See Note [Rotary conventions]: LlamaGen's prefix tokens get cos = sin = 0.
    const double prefix_cos = spec.prefix_rotation == PrefixRotation::zero ? 0.0 : 1.0;
    table.cos = at::where(is_prefix, at::full({}, prefix_cos, table.cos.options()), table.cos);
    table.sin = at::where(is_prefix, at::zeros({}, table.sin.options()), table.sin);
  }
  return table;
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTable& table) {
  TESSERA_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0,
                "apply_rotary: the last dimension must be even, got shape {}", x.sizes());
  TESSERA_CHECK(table.cos.defined() && table.sin.defined() && table.cos.size(-1) == x.size(-1) / 2,
                "apply_rotary: the table has {} pairs per vector but x {} has {}",
                table.cos.defined() ? table.cos.size(-1) : 0, x.sizes(), x.size(-1) / 2);
  std::vector<int64_t> pair_shape(x.sizes().begin(), x.sizes().end());
  pair_shape.back() = x.size(-1) / 2;
  pair_shape.push_back(2);
  const at::Tensor pairs = x.to(at::kFloat).reshape(pair_shape);
  const at::Tensor x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
  const at::Tensor out0 = x0 * table.cos - x1 * table.sin;
  const at::Tensor out1 = x1 * table.cos + x0 * table.sin;
  return at::stack({out0, out1}, -1).flatten(-2).to(x.scalar_type());
}

at::Tensor sinusoidal_embedding(const at::Tensor& positions, int64_t width, double base) {
  TESSERA_CHECK(width >= 2 && width % 2 == 0,
                "sinusoidal_embedding: width must be even and >= 2, got {}", width);
  TESSERA_CHECK(positions.defined() && !at::isFloatingType(positions.scalar_type()),
                "sinusoidal_embedding: positions must be an integer tensor");
  const int64_t half = width / 2;
  const at::Tensor i =
      at::arange(half, at::TensorOptions().dtype(at::kDouble).device(positions.device()));
  const at::Tensor omega = at::pow(base, i * (-1.0 / static_cast<double>(half)));
  const at::Tensor angle = positions.to(at::kDouble).unsqueeze(-1) * omega;
  return at::cat({at::sin(angle), at::cos(angle)}, -1).to(at::kFloat);
}

}  // namespace tessera
