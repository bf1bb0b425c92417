// JPEG reading (libjpeg-turbo through decode_image) on arbitrary bytes from memory, kept as
// decoded and converted to one channel. Inputs that do not start with a JPEG's SOI marker get
// one, so every input is a JPEG.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_input.h"
#include "tessera/io/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes;
  if (size < 2 || data[0] != 0xFF || data[1] != 0xD8) bytes = {0xFF, 0xD8};
  bytes.insert(bytes.end(), data, data + size);
  for (int channels : {0, 1}) {
    tessera::fuzz::expect_clean_outcome([&] {
      const at::Tensor image =
          tessera::decode_image(std::span<const uint8_t>(bytes), channels, "fuzz.jpg");
      tessera::fuzz::expect_consistent_tensor(image);
    });
  }
  return 0;
}
