#pragma once
// Tessera's own PNG, JPEG and BMP decoders (Note [Own image decoders] in src/core/image_io.cpp):
// what read_image and decode_image call. Internal to the library; the public entry points are
// in tessera/core/image_io.h.
//
// Every decoder takes untrusted bytes. The contract, checked by fuzz/fuzz_image under ASan and
// UBSan: no read or write out of bounds and no undefined behaviour on any input; memory bounded
// by the declared image size, which is refused above `DecodeLimits::max_pixels` before anything
// that size is allocated; time linear in the file size plus the decoded pixels; and every bad
// input ends in a tessera::Error whose message says what is wrong (without the file name: the
// caller adds it).

#include <cstdint>
#include <span>
#include <vector>

namespace tessera::image_codecs {

/// A decoded image: 8 bits per sample, rows top to bottom, samples interleaved.
struct DecodedImage {
  int64_t width = 0;            ///< pixels per row
  int64_t height = 0;           ///< rows
  int channels = 0;             ///< 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
  std::vector<uint8_t> pixels;  ///< height * width * channels samples
};

/// What a decoder refuses before allocating.
struct DecodeLimits {
  /// width * height above this is refused from the header alone (67 M: 8192 x 8192).
  int64_t max_pixels = int64_t{1} << 26;
};

/// PNG: colour types 0, 2, 3, 4, 6; bit depths 1, 2, 4, 8, 16 (16-bit samples keep their high
/// byte); Adam7 interlacing; a palette expands to RGB, or RGBA when it has a tRNS chunk; grey or
/// RGB with a tRNS colour key gains an alpha channel. Chunk CRCs are checked (a bad critical
/// chunk is an error, a bad ancillary chunk is skipped); the image data is inflated by zlib.
/// A palette index past the palette is an error.
DecodedImage decode_png(std::span<const uint8_t> bytes, const DecodeLimits& limits = {});

/// JPEG: baseline, extended sequential (8-bit Huffman) and progressive; 1 component (grey), 3
/// (YCbCr, or RGB per an Adobe marker) or 4 (CMYK/YCCK per an Adobe marker, converted to RGB);
/// any sampling factors 1..4 with restart intervals (chroma upsampled with a triangle filter for
/// 2:1 ratios, by the nearest sample otherwise). Four components without an Adobe marker are read
/// as YCbCr with the fourth ignored, as stb_image does. Output 1 channel (grey) or 3 (RGB).
/// Arithmetic coding, lossless, hierarchical and 12-bit JPEGs are refused by name.
DecodedImage decode_jpeg(std::span<const uint8_t> bytes, const DecodeLimits& limits = {});

/// BMP: Windows headers (BITMAPINFOHEADER and its V2..V5 extensions, and the OS/2 core header);
/// 1, 4, 8 bits per pixel with a palette, 16 and 32 with or without bit fields, 24; bottom-up or
/// top-down rows. RLE and embedded JPEG/PNG are refused by name. Output 3 channels, or 4 when
/// the pixels have an alpha mask (an alpha that is zero everywhere is read as opaque).
DecodedImage decode_bmp(std::span<const uint8_t> bytes, const DecodeLimits& limits = {});

}  // namespace tessera::image_codecs
