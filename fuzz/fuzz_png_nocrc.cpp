// Tessera's PNG decoder on arbitrary bytes with chunk CRCs and zlib's Adler-32 ignored (this
// target's build defines TESSERA_PNG_FUZZ_IGNORE_CRC), so that mutated files get past the chunk
// framing into the decoding itself. No LibTorch: the decoder's own output is checked.
#include <cstddef>
#include <cstdint>

#include "core/image_codecs/image_decoders.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tessera::fuzz::expect_clean_outcome([&] {
    const auto image = tessera::image_codecs::decode_png({data, size});
    tessera::fuzz::expect_consistent_image(image);
  });
  return 0;
}
