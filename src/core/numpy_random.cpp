#include "tessera/core/numpy_random.h"

#include <ATen/ATen.h>
#include <ATen/core/MT19937RNGEngine.h>

#include <utility>

#include "tessera/core/error.h"

namespace tessera {

namespace {

// numpy's random_interval for max < 2^32: a uniform integer in [0, max].
uint32_t random_interval(at::mt19937& engine, uint32_t max) {
  if (max == 0) return 0;
  uint32_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  uint32_t value = engine() & mask;
  while (value > max) value = engine() & mask;
  return value;
}

}  // namespace

at::Tensor numpy_shuffled_ranges(uint32_t seed, int64_t rows, int64_t n) {
  TESSERA_CHECK(rows >= 0 && n >= 0 && n <= (int64_t{1} << 32),
                "numpy_shuffled_ranges: need rows >= 0 and 0 <= n <= 2^32, got {} and {}", rows, n);
  at::mt19937 engine(seed);
  at::Tensor out = at::arange(n, at::kLong).repeat({rows, 1}).contiguous();
  int64_t* data = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    int64_t* a = data + r * n;
    for (int64_t i = n - 1; i >= 1; --i) {
      const auto j = static_cast<int64_t>(random_interval(engine, static_cast<uint32_t>(i)));
      std::swap(a[i], a[j]);
    }
  }
  return out;
}

}  // namespace tessera
