#pragma once
// What every fuzz target shares: the input written to a file (the readers under test take paths,
// as users give them), and the rule that bad input may only end in a tessera::Error.

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "tessera/core/error.h"

namespace tessera::fuzz {

// One file per process, rewritten for each input (in /dev/shm when there is one: no disk I/O).
inline const std::filesystem::path& input_file(const char* suffix) {
  static const std::filesystem::path path = [&] {
    const std::filesystem::path dir =
        std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    return dir / ("tessera-fuzz-" + std::to_string(::getpid()) + suffix);
  }();
  return path;
}

inline const std::filesystem::path& write_input(const uint8_t* data, size_t size,
                                                const char* suffix) {
  const std::filesystem::path& path = input_file(suffix);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

// Runs `read`; a tessera::Error (a clear message about the input) is the accepted outcome of bad
// input. Anything else escaping — a std::exception from a library underneath, an unknown throw —
// is a finding: it aborts, so that libFuzzer saves the input as a reproducer.
template <class Read>
void expect_clean_outcome(Read&& read) {
  try {
    read();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: an exception other than tessera::Error escaped: %s\n",
                 e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "finding: a non-std exception escaped\n");
    std::abort();
  }
}

// A decoded image must be uint8 [C, H, W] with 1..4 channels, contiguous, and every sample
// readable (the sum touches them all); anything else is a finding.
inline void expect_consistent_tensor(const at::Tensor& image) {
  if (!image.defined() || image.dim() != 3 || image.scalar_type() != at::kByte ||
      image.size(0) < 1 || image.size(0) > 4 || image.size(1) < 1 || image.size(2) < 1 ||
      !image.is_contiguous()) {
    std::fprintf(stderr, "finding: a decoded image that is not uint8 [1..4, H, W]\n");
    std::abort();
  }
  (void)image.sum().item<int64_t>();
}

}  // namespace tessera::fuzz
