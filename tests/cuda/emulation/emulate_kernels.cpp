// Runs every case of emulated_attention.h, every problem in every dtype and head dim: the CUDA
// attention kernels' source on the CPU against float64 (the same cases as ctest's
// tests/cuda/emulated_kernels_test.cpp, without LibTorch or GoogleTest). Build and run with
// tests/cuda/emulation/run [--quick] (g++ and the CUDA headers; no GPU). --quick: bf16, head dim
// 64 only. Exit status 0 when every case is within tolerance.

#include <cstdio>
#include <string>

#include "emulated_attention.h"

int main(int argc, char** argv) {
  using namespace tessera::cuda::emulation;
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  int failed = 0;
  const std::vector<Problem> all = problems();
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t v = 0; v < std::size(kVariants); ++v) {
      if (quick && v > 0) continue;
      const Outcome o = run(all[i], kVariants[v], case_seed(i, v));
      std::printf("%s\n", o.line.c_str());
      std::fflush(stdout);
      failed += o.ok ? 0 : 1;
    }
  }
  std::printf("%s: %d failed\n", failed == 0 ? "all cases within tolerance" : "FAILURES", failed);
  return failed == 0 ? 0 : 1;
}
