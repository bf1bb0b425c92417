#pragma once
// What every fuzz target shares: the input written to a file (the readers under test take paths,
// as users give them), and the rule that bad input may only end in a tessera::Error.

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

// A decoder's result must hold exactly width * height * channels samples, 1..4 channels; anything
// else is a finding.
template <class Image>
void expect_consistent_image(const Image& image) {
  const size_t expected =
      static_cast<size_t>(image.width * image.height) * static_cast<size_t>(image.channels);
  if (image.channels < 1 || image.channels > 4 || image.pixels.size() != expected) {
    std::fprintf(stderr, "finding: %lldx%lld x %d channels but %zu samples\n",
                 static_cast<long long>(image.width), static_cast<long long>(image.height),
                 image.channels, image.pixels.size());
    std::abort();
  }
}

}  // namespace tessera::fuzz
