// stb_image compiled privately into the test executable that uses it (STBI_STATIC: its symbols
// stay in this file, whatever else is linked).
#include "common/stb_reference.h"

// Its warnings are off for this file (tests/CMakeLists.txt): third-party C, not ours to fix.
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include <memory>

namespace tessera::testing {

StbImage stb_decode(std::span<const uint8_t> bytes, int channels) {
  StbImage image;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &image.width,
                            &image.height, &image.channels_in_file, channels),
      stbi_image_free);
  if (!pixels) {
    image.failure = stbi_failure_reason() ? stbi_failure_reason() : "unknown reason";
    return image;
  }
  image.channels = channels ? channels : image.channels_in_file;
  const auto* begin = pixels.get();
  image.pixels.assign(begin, begin + static_cast<size_t>(image.width) * image.height * image.channels);
  return image;
}

}  // namespace tessera::testing
