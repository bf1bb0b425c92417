#pragma once
// Small helpers shared by the heads (private to src/head).

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera::head_detail {

inline std::string shape_text(const at::Tensor& t) {
  return t.defined() ? fmt::format("{}", t.sizes()) : std::string("undefined");
}

// Σ w·ℓ / Σ w over rows (MAR's masked mean); the plain mean when `weights` is undefined.
// `repeats` > 1 tiles the weights as the rows were tiled (MAR's diffusion batch multiplier).
inline at::Tensor weighted_mean(const at::Tensor& per_row, const at::Tensor& weights,
                                int64_t repeats, const char* what) {
  if (!weights.defined()) return per_row.mean();
  const int64_t rows = per_row.size(0) / repeats;
  TESSERA_CHECK(weights.dim() == 1 && weights.size(0) == rows,
                "{}: loss weights must be [{}] (one per row), got {}", what, rows,
                shape_text(weights));
  at::Tensor w = weights.to(per_row.device(), per_row.scalar_type()).repeat({repeats});
  at::Tensor total = w.sum();
  TESSERA_CHECK(total.item<double>() > 0 && (w >= 0).all().item<bool>(),
                "{}: loss weights must be non-negative with a positive sum", what);
  return (per_row * w).sum() / total;
}

// Positions per sample of a call with `rows` rows and `samples` generators (rows are
// sample-major); throws when they do not divide.
inline int64_t positions_per_sample(int64_t rows, int64_t samples, const char* what) {
  TESSERA_CHECK(samples >= 1 && rows % samples == 0,
                "{}: {} rows do not split evenly over {} samples (rows are sample-major, every "
                "sample with the same number of positions)",
                what, rows, samples);
  return rows / samples;
}

}  // namespace tessera::head_detail
