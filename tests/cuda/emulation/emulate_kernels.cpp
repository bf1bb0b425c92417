// Runs every case of emulated_attention.h: the CUDA attention kernels' source on CPU threads
// against float64. Build and run with tests/cuda/emulation/run [--quick] (g++ and the CUDA
// headers; no GPU, no LibTorch). Exit status 0 when every case is within tolerance.

#include "emulated_attention.h"

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  using namespace tessera::cuda::emulation;
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  int failed = 0;
  uint64_t seed = 1;
  auto report = [&](const Outcome& o) {
    std::printf("%s\n", o.line.c_str());
    std::fflush(stdout);
    failed += o.ok ? 0 : 1;
  };
  for (const Problem& p : problems()) {
    report(run<__nv_bfloat16, 64>(p, seed++));
    if (quick) continue;
    report(run<__half, 128>(p, seed++));
  }
  if (!quick) {
    report(run<__nv_bfloat16, 128>(problems()[1], seed++));
    report(run<__half, 64>(problems()[3], seed++));
  }
  std::printf("%s: %d failed\n", failed == 0 ? "all cases within tolerance" : "FAILURES", failed);
  return failed == 0 ? 0 : 1;
}
