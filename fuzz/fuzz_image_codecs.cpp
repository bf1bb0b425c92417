// Tessera's three image decoders called directly, without LibTorch or a file in between: the
// format is told from the first bytes as decode_image does, and each result's size is checked.
// Tens of thousands of inputs a second, where fuzz_image (through read_image) manages a few
// thousand.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/image_codecs/image_decoders.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  tessera::fuzz::expect_clean_outcome([&] {
    namespace codecs = tessera::image_codecs;
    codecs::DecodedImage image;
    if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) {
      image = codecs::decode_jpeg(bytes);
    } else if (size >= 2 && data[0] == 'B' && data[1] == 'M') {
      image = codecs::decode_bmp(bytes);
    } else {
      image = codecs::decode_png(bytes);
    }
    tessera::fuzz::expect_consistent_image(image);
  });
  return 0;
}
