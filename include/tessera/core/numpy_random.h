#pragma once
// numpy's legacy global RandomState (np.random.seed, np.random.shuffle), the one numpy stream a
// reference draws from at sampling time: MAR's sample_orders shuffles one arange per image.
//
//   np.random.seed(seed)                    numpy_shuffled_ranges(seed, rows, n)
//   for _ in range(rows):
//       order = np.arange(n); np.random.shuffle(order)
//
// The state is MT19937 seeded by init_genrand(seed) (numpy's legacy seeding of a 32-bit integer),
// the same engine ATen's CPU generator uses. shuffle is Fisher–Yates from the end: for i = n − 1
// down to 1, swap a[i] with a[j], j uniform in [0, i] by numpy's random_interval (32-bit outputs
// masked to the smallest all-ones mask ≥ i, redrawn while above i). Both are numpy's published
// algorithm (numpy/random/src/distributions/distributions.c), which its legacy RandomState keeps
// fixed across versions.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tessera {

/// `rows` permutations of 0 … n − 1, int64 [rows, n] on the CPU: row r is what the r-th
/// np.random.shuffle(np.arange(n)) gives after np.random.seed(seed). Throws tessera::Error for
/// negative sizes.
at::Tensor numpy_shuffled_ranges(uint32_t seed, int64_t rows, int64_t n);

}  // namespace tessera
