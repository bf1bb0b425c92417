// Tessera's BMP decoder: Windows bitmaps as Microsoft documents them (BITMAPFILEHEADER, then a
// BITMAPCOREHEADER, BITMAPINFOHEADER or one of its V2..V5 extensions), uncompressed or with bit
// fields. Every field is read through a bounds-checked cursor, and the pixel data must be in the
// file before anything the header's size is allocated.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/image_codecs/image_decoders.h"
#include "tessera/core/error.h"

namespace tessera::image_codecs {
namespace {

// Little-endian reads at an offset the caller has checked.
uint32_t u16_at(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint32_t>(b[at]) | static_cast<uint32_t>(b[at + 1]) << 8;
}
uint32_t u32_at(std::span<const uint8_t> b, size_t at) {
  return u16_at(b, at) | u16_at(b, at + 2) << 16;
}

// One channel of a bit-field pixel: the mask's bits, widened to 8 bits by repeating them (a 5-bit
// 31 becomes 255, as every BMP reader draws it) or cut to their top 8.
struct BitField {
  uint32_t mask = 0;
  int shift = 0;  // position of the mask's lowest bit
  int bits = 0;   // width of the mask

  static BitField from_mask(uint32_t mask, const char* name) {
    BitField field;
    field.mask = mask;
    if (mask == 0) return field;
    field.shift = std::countr_zero(mask);
    field.bits = std::popcount(mask);
    // Contiguous: shifted down, the mask is 2^bits - 1.
    TESSERA_CHECK((mask >> field.shift) == (field.bits == 32 ? 0xFFFFFFFFu : (1u << field.bits) - 1),
                  "corrupt BMP: the {} bit field mask {:#010x} is not one run of bits", name, mask);
    return field;
  }

  uint8_t extract(uint32_t pixel) const {
    if (bits == 0) return 0;
    uint32_t value = (pixel & mask) >> shift;
    if (bits >= 8) return static_cast<uint8_t>(value >> (bits - 8));
    uint32_t wide = 0;
    for (int filled = 0; filled < 8; filled += bits) {
      wide = (wide << bits) | value;
    }
    // `wide` holds ceil(8 / bits) copies; keep the top 8 bits.
    const int total = ((8 + bits - 1) / bits) * bits;
    return static_cast<uint8_t>(wide >> (total - 8));
  }
};

constexpr uint32_t kCompressionNone = 0, kCompressionRle8 = 1, kCompressionRle4 = 2,
                   kCompressionBitFields = 3, kCompressionAlphaBitFields = 6;

}  // namespace

DecodedImage decode_bmp(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  constexpr size_t kFileHeader = 14;
  TESSERA_CHECK(bytes.size() >= kFileHeader + 4 && bytes[0] == 'B' && bytes[1] == 'M',
                "not a BMP file (it must start with 'BM' and hold a header)");
  const uint32_t pixel_offset = u32_at(bytes, 10);
  const uint32_t header_size = u32_at(bytes, kFileHeader);
  // 12: OS/2 and Windows 2 core header; 40: BITMAPINFOHEADER; 52, 56: its V2 and V3 extensions
  // (masks inside the header); 108, 124: V4 and V5 (colour spaces, ignored here).
  TESSERA_CHECK(header_size == 12 || header_size == 40 || header_size == 52 ||
                    header_size == 56 || header_size == 108 || header_size == 124,
                "unsupported BMP header of {} bytes (expected 12, 40, 52, 56, 108 or 124)",
                header_size);
  TESSERA_CHECK(bytes.size() >= kFileHeader + header_size,
                "truncated BMP: its {}-byte header does not fit in the file's {} bytes",
                header_size, bytes.size());
  const size_t info = kFileHeader;
  int64_t width = 0, height = 0;
  uint32_t planes = 0, bits_per_pixel = 0, compression = kCompressionNone, colours_used = 0;
  bool top_down = false;
  if (header_size == 12) {
    width = u16_at(bytes, info + 4);
    height = u16_at(bytes, info + 6);
    planes = u16_at(bytes, info + 8);
    bits_per_pixel = u16_at(bytes, info + 10);
  } else {
    width = static_cast<int32_t>(u32_at(bytes, info + 4));
    const auto signed_height = static_cast<int32_t>(u32_at(bytes, info + 8));
    top_down = signed_height < 0;
    height = top_down ? -static_cast<int64_t>(signed_height) : signed_height;
    planes = u16_at(bytes, info + 12);
    bits_per_pixel = u16_at(bytes, info + 14);
    compression = u32_at(bytes, info + 16);
    colours_used = u32_at(bytes, info + 32);
  }
  TESSERA_CHECK(planes == 1, "corrupt BMP: {} colour planes (must be 1)", planes);
  TESSERA_CHECK(width >= 1 && height >= 1, "corrupt BMP: image size {}x{}", width, height);
  TESSERA_CHECK(width * height <= limits.max_pixels,
                "BMP is {}x{} pixels, more than the {} this loader decodes", width, height,
                limits.max_pixels);
  TESSERA_CHECK(compression != kCompressionRle8 && compression != kCompressionRle4,
                "RLE-compressed BMP files are not supported (convert the image to PNG)");
  TESSERA_CHECK(compression == kCompressionNone || compression == kCompressionBitFields ||
                    compression == kCompressionAlphaBitFields,
                "unsupported BMP compression {} (embedded JPEG or PNG, or unknown)", compression);
  const bool palette_based = bits_per_pixel == 1 || bits_per_pixel == 4 || bits_per_pixel == 8;
  TESSERA_CHECK(palette_based || bits_per_pixel == 16 || bits_per_pixel == 24 ||
                    bits_per_pixel == 32,
                "unsupported BMP depth of {} bits per pixel (expected 1, 4, 8, 16, 24 or 32)",
                bits_per_pixel);
  TESSERA_CHECK(compression == kCompressionNone || bits_per_pixel == 16 || bits_per_pixel == 32,
                "corrupt BMP: bit fields need 16 or 32 bits per pixel, the file has {}",
                bits_per_pixel);

  // Bit fields: from the V2+ header, or from the 12 (16 with alpha) bytes after a 40-byte one.
  BitField red, green, blue, alpha;
  size_t after_header = kFileHeader + header_size;
  if (bits_per_pixel == 16 || bits_per_pixel == 32) {
    uint32_t masks[4] = {0, 0, 0, 0};
    if (compression == kCompressionNone) {
      // The documented defaults: 5-5-5 for 16 bits; 8-8-8 for 32, whose top byte many writers
      // use as alpha (it is taken as alpha below unless it is zero everywhere).
      if (bits_per_pixel == 16) {
        masks[0] = 0x7C00, masks[1] = 0x03E0, masks[2] = 0x001F;
      } else {
        masks[0] = 0x00FF0000, masks[1] = 0x0000FF00, masks[2] = 0x000000FF;
        masks[3] = 0xFF000000;
      }
    } else if (header_size == 40) {
      const size_t count = compression == kCompressionAlphaBitFields ? 4 : 3;
      TESSERA_CHECK(bytes.size() >= after_header + 4 * count,
                    "truncated BMP: its bit field masks are missing");
      for (size_t i = 0; i < count; ++i) masks[i] = u32_at(bytes, after_header + 4 * i);
      after_header += 4 * count;
    } else {
      for (size_t i = 0; i < 3; ++i) masks[i] = u32_at(bytes, info + 40 + 4 * i);
      if (header_size >= 56) masks[3] = u32_at(bytes, info + 52);
    }
    TESSERA_CHECK(masks[0] != 0 || masks[1] != 0 || masks[2] != 0,
                  "corrupt BMP: its red, green and blue bit field masks are all zero");
    red = BitField::from_mask(masks[0], "red");
    green = BitField::from_mask(masks[1], "green");
    blue = BitField::from_mask(masks[2], "blue");
    alpha = BitField::from_mask(masks[3], "alpha");
  }

  // The palette sits between the headers and the pixels: 3 bytes (B, G, R) per entry after a
  // core header, 4 (B, G, R, unused) otherwise. Its length is the header's colour count (all
  // 2^bits when 0), but writers of core headers, which have no count, and some others store fewer
  // entries: what fits before the pixel data is read. An index past it draws black, as Windows
  // does.
  std::vector<uint8_t> palette;  // R, G, B per entry
  if (palette_based) {
    const size_t entry_size = header_size == 12 ? 3 : 4;
    const uint32_t most = 1u << bits_per_pixel;
    TESSERA_CHECK(colours_used <= most,
                  "corrupt BMP: a palette of {} colours for {} bits per pixel (at most {})",
                  colours_used, bits_per_pixel, most);
    TESSERA_CHECK(pixel_offset >= after_header + entry_size && bytes.size() >= after_header + entry_size,
                  "corrupt BMP: {} bits per pixel need a palette, and the file has none before "
                  "its pixel data",
                  bits_per_pixel);
    const size_t room = (std::min<size_t>(pixel_offset, bytes.size()) - after_header) / entry_size;
    const size_t entries = std::min<size_t>(colours_used == 0 ? most : colours_used, room);
    palette.assign(3 * size_t{most}, 0);
    for (size_t i = 0; i < entries; ++i) {
      const size_t at = after_header + entry_size * i;
      palette[3 * i] = bytes[at + 2];
      palette[3 * i + 1] = bytes[at + 1];
      palette[3 * i + 2] = bytes[at];
    }
  }

  // Rows are padded to 4 bytes; the last row's padding may be missing (some writers drop it).
  const int64_t row_bytes = (width * bits_per_pixel + 7) / 8;
  const int64_t stride = (width * bits_per_pixel + 31) / 32 * 4;
  const int64_t needed = (height - 1) * stride + row_bytes;
  TESSERA_CHECK(pixel_offset >= after_header && pixel_offset <= bytes.size() &&
                    static_cast<int64_t>(bytes.size() - pixel_offset) >= needed,
                "truncated BMP: {}x{} pixels at {} bits need {} bytes of pixel data from offset "
                "{}, the file has {} bytes",
                width, height, bits_per_pixel, needed, pixel_offset, bytes.size());

  DecodedImage image;
  image.width = width;
  image.height = height;
  image.channels = alpha.bits > 0 ? 4 : 3;
  const int channels = image.channels;
  image.pixels.resize(static_cast<size_t>(width * height * channels));
  bool any_alpha = false;
  for (int64_t row = 0; row < height; ++row) {
    const uint8_t* source = bytes.data() + pixel_offset + row * stride;
    const int64_t out_row = top_down ? row : height - 1 - row;
    uint8_t* out = image.pixels.data() + out_row * width * channels;
    for (int64_t x = 0; x < width; ++x, out += channels) {
      if (palette_based) {
        const int64_t bit = x * bits_per_pixel;
        const uint32_t index = (source[bit / 8] >> (8 - bits_per_pixel - bit % 8)) &
                               ((1u << bits_per_pixel) - 1);
        std::memcpy(out, &palette[3 * index], 3);
      } else if (bits_per_pixel == 24) {
        out[0] = source[3 * x + 2];
        out[1] = source[3 * x + 1];
        out[2] = source[3 * x];
      } else {
        const uint32_t pixel = bits_per_pixel == 16
                                   ? u16_at(bytes, pixel_offset + row * stride + 2 * x)
                                   : u32_at(bytes, pixel_offset + row * stride + 4 * x);
        out[0] = red.extract(pixel);
        out[1] = green.extract(pixel);
        out[2] = blue.extract(pixel);
        if (channels == 4) {
          out[3] = alpha.extract(pixel);
          any_alpha = any_alpha || out[3] != 0;
        }
      }
    }
  }
  // An alpha channel that is zero everywhere is an unused byte, not a transparent picture.
  if (channels == 4 && !any_alpha) {
    for (size_t i = 3; i < image.pixels.size(); i += 4) image.pixels[i] = 255;
  }
  return image;
}

}  // namespace tessera::image_codecs
