#pragma once
// stb_image (Debian's libstb-dev) as the independent reference for the library's image reading
// (libpng and libjpeg-turbo): on valid files, which is all the tests hand it, it is a widely used
// decoder sharing no code with them, and it defines the sample conversion read_image has always
// followed. The library itself does not use stb (Note [Image decoding with libpng and
// libjpeg-turbo] in src/io/image_io.cpp).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tessera::testing {

/// What stb_image decoded: 8-bit samples, rows top to bottom, interleaved.
struct StbImage {
  int width = 0;
  int height = 0;
  int channels = 0;             ///< after conversion to the requested count
  int channels_in_file = 0;     ///< stb's own count for the file
  std::vector<uint8_t> pixels;  ///< height * width * channels
  std::string failure;          ///< stb's reason when it could not decode; empty on success
};

/// stbi_load_from_memory with `channels` 0 (as stored) or 1..4.
StbImage stb_decode(std::span<const uint8_t> bytes, int channels);

}  // namespace tessera::testing
