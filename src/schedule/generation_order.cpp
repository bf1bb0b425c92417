#include "tessera/schedule/generation_order.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include "tessera/core/error.h"

namespace tessera {

const char* generation_order_name(GenerationOrder order) {
  for (const auto& [value, name] : ConfigEnum<GenerationOrder>::values) {
    if (value == order) return name;
  }
  return "unknown";
}

double radical_inverse(int64_t k, int64_t base) {
  TESSERA_CHECK(k >= 0 && base >= 2, "radical_inverse: expected k >= 0 and base >= 2, got {}, {}",
                k, base);
  double result = 0.0, scale = 1.0 / static_cast<double>(base);
  while (k > 0) {
    result += static_cast<double>(k % base) * scale;
    k /= base;
    scale /= static_cast<double>(base);
  }
  return result;
}

std::vector<int64_t> generation_order(GenerationOrder order, int64_t height, int64_t width) {
  TESSERA_CHECK(height >= 1 && width >= 1,
                "generation order: the grid must be at least 1x1, got "
                "{}x{}",
                height, width);
  const int64_t n = height * width;
  std::vector<int64_t> cells(static_cast<size_t>(n));
  std::iota(cells.begin(), cells.end(), 0);
  switch (order) {
    case GenerationOrder::raster:
      return cells;
    case GenerationOrder::near_to_far:
      // A stable sort by ring keeps raster order (= increasing row) within a ring.
      std::stable_sort(cells.begin(), cells.end(), [&](int64_t a, int64_t b) {
        return a / width + a % width < b / width + b % width;
      });
      return cells;
    case GenerationOrder::halton: {
      std::vector<char> seen(static_cast<size_t>(n), 0);
      std::vector<int64_t> result;
      result.reserve(static_cast<size_t>(n));
      // The Halton points are dense, so every cell is reached; the bound only guards the loop.
      for (int64_t k = 0; static_cast<int64_t>(result.size()) < n; ++k) {
        TESSERA_CHECK(k < 1000 * n + 1000,
                      "generation order: Halton sequence did not cover the "
                      "{}x{} grid",
                      height, width);
        const auto row = std::min<int64_t>(
            height - 1, static_cast<int64_t>(radical_inverse(k, 2) * static_cast<double>(height)));
        const auto col = std::min<int64_t>(
            width - 1, static_cast<int64_t>(radical_inverse(k, 3) * static_cast<double>(width)));
        const int64_t cell = row * width + col;
        if (seen[static_cast<size_t>(cell)]) continue;
        seen[static_cast<size_t>(cell)] = 1;
        result.push_back(cell);
      }
      return result;
    }
  }
  TESSERA_FAIL("generation order: unknown order {}", static_cast<int>(order));
}

at::Tensor generation_order_tensor(GenerationOrder order, int64_t height, int64_t width) {
  std::vector<int64_t> cells = generation_order(order, height, width);
  return at::tensor(cells, at::kLong);
}

}  // namespace tessera
