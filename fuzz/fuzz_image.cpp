// The image loader (tessera/io/image_io.h: libpng and libjpeg-turbo) on arbitrary bytes as a user
// hands them over, in a file: kept as decoded and converted to each channel count.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tessera/io/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = tessera::fuzz::write_input(data, size, ".img");
  for (int channels : {0, 1, 3}) {
    tessera::fuzz::expect_clean_outcome([&] {
      const at::Tensor image = tessera::read_image(path, channels);
      (void)image.sum().item<int64_t>();
    });
  }
  return 0;
}
