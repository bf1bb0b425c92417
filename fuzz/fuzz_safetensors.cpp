// The safetensors reader (tessera/io/safetensors.h) on arbitrary bytes: the header's length,
// JSON, dtypes, shapes and offsets are all the file's word. Every tensor it accepts is read in
// full, so that an offset or size it failed to check shows as an out-of-bounds read.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tessera/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = tessera::fuzz::write_input(data, size, ".safetensors");
  tessera::fuzz::expect_clean_outcome([&] {
    const tessera::SafetensorsFile file = tessera::SafetensorsFile::open(path);
    for (const auto& [name, value] : file.metadata()) (void)name.size(), (void)value.size();
    for (const auto& [name, tensor] : file.all()) {
      // Touch every byte: sum as float64 (bool and integer tensors convert).
      (void)tensor.to(at::kDouble).sum().item<double>();
    }
  });
  return 0;
}
