// PNG reading (libpng through decode_image) on arbitrary bytes from memory, with chunk CRCs and
// zlib's Adler-32 ignored: this target compiles src/io/image_io.cpp with
// TESSERA_PNG_FUZZ_IGNORE_CRC (Note [PNG fuzzing without CRCs] there), so that mutated chunks
// reach inflation, the filters, Adam7 and the conversion instead of stopping at their checksums.
// Inputs that do not start with the PNG signature get it, so every input is a PNG.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_input.h"
#include "tessera/io/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> bytes(kSignature, kSignature + 8);
  const bool signed_input = size >= 8 && std::memcmp(data, kSignature, 8) == 0;
  bytes.insert(bytes.end(), data + (signed_input ? 8 : 0), data + size);
  tessera::fuzz::expect_clean_outcome([&] {
    const at::Tensor image = tessera::decode_image(std::span<const uint8_t>(bytes), 0, "fuzz.png");
    tessera::fuzz::expect_consistent_tensor(image);
  });
  return 0;
}
