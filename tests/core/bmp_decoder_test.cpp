// Tessera's BMP decoder. Each file is built here, field by field from Microsoft's BMP layout,
// around pixels chosen by the test; the decoded image must equal those pixels and also what
// stb_image (an independent decoder, tests/common/stb_reference.h) makes of the same bytes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/stb_reference.h"
#include "tessera/core/error.h"
#include "tessera/core/image_io.h"

namespace tessera {
namespace {

using Bytes = std::vector<uint8_t>;
using tessera::testing::error_message_of;
using tessera::testing::stb_decode;

void put16(Bytes& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}
void put32(Bytes& out, uint32_t v) {
  put16(out, v & 0xFFFF);
  put16(out, v >> 16);
}
void set32(Bytes& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

struct BmpSpec {
  int width = 5;
  int height = 3;
  int bits = 24;
  uint32_t header_size = 40;
  uint32_t compression = 0;
  bool top_down = false;
  std::vector<uint32_t> masks;      // written after a 40-byte header, or inside a V2+ header
  std::vector<uint32_t> palette;    // 0x00RRGGBB
  bool drop_last_row_padding = false;
};

// `pixel(x, y)` is the value stored for pixel (x, y), y counted from the top: a palette index, or
// the 16/24/32-bit word.
template <class Pixel>
Bytes make_bmp(const BmpSpec& spec, Pixel pixel) {
  Bytes info;
  put32(info, spec.header_size);
  if (spec.header_size == 12) {
    put16(info, static_cast<uint32_t>(spec.width));
    put16(info, static_cast<uint32_t>(spec.height));
    put16(info, 1);
    put16(info, static_cast<uint32_t>(spec.bits));
  } else {
    put32(info, static_cast<uint32_t>(spec.width));
    put32(info, static_cast<uint32_t>(spec.top_down ? -spec.height : spec.height));
    put16(info, 1);
    put16(info, static_cast<uint32_t>(spec.bits));
    put32(info, spec.compression);
    put32(info, 0);       // image size (may be 0 when uncompressed)
    put32(info, 2835);    // 72 dpi
    put32(info, 2835);
    put32(info, static_cast<uint32_t>(spec.palette.size()));
    put32(info, 0);       // important colours
    size_t mask = 0;
    while (info.size() < spec.header_size) {  // V2+ headers: masks, then zeros
      put32(info, mask < spec.masks.size() ? spec.masks[mask] : 0);
      ++mask;
    }
    if (spec.header_size == 40) {
      for (uint32_t m : spec.masks) put32(info, m);
    }
  }
  Bytes palette;
  for (uint32_t colour : spec.palette) {
    palette.push_back(static_cast<uint8_t>(colour));
    palette.push_back(static_cast<uint8_t>(colour >> 8));
    palette.push_back(static_cast<uint8_t>(colour >> 16));
    if (spec.header_size != 12) palette.push_back(0);
  }
  Bytes file = {'B', 'M'};
  put32(file, 0);  // size, set below
  put32(file, 0);
  put32(file, static_cast<uint32_t>(14 + info.size() + palette.size()));
  file.insert(file.end(), info.begin(), info.end());
  file.insert(file.end(), palette.begin(), palette.end());
  const size_t stride = (static_cast<size_t>(spec.width) * spec.bits + 31) / 32 * 4;
  for (int stored = 0; stored < spec.height; ++stored) {
    const int y = spec.top_down ? stored : spec.height - 1 - stored;
    Bytes row(stride, 0);
    for (int x = 0; x < spec.width; ++x) {
      const uint32_t v = pixel(x, y);
      if (spec.bits < 8) {
        const size_t bit = static_cast<size_t>(x) * spec.bits;
        row[bit / 8] |= static_cast<uint8_t>(v << (8 - spec.bits - bit % 8));
      } else {
        for (int byte = 0; byte < spec.bits / 8; ++byte) {
          row[x * spec.bits / 8 + byte] = static_cast<uint8_t>(v >> (8 * byte));
        }
      }
    }
    if (spec.drop_last_row_padding && stored == spec.height - 1) {
      row.resize((static_cast<size_t>(spec.width) * spec.bits + 7) / 8);
    }
    file.insert(file.end(), row.begin(), row.end());
  }
  set32(file, 2, static_cast<uint32_t>(file.size()));
  return file;
}

// Decodes with Tessera and stb; checks both against `expected` (HWC).
void expect_decodes_to(const Bytes& file, int width, int height, int channels,
                       const std::vector<uint8_t>& expected, bool compare_with_stb = true) {
  const at::Tensor image = decode_image(file);
  ASSERT_EQ(image.sizes(), (at::IntArrayRef{channels, height, width}));
  const at::Tensor hwc = image.permute({1, 2, 0}).contiguous();
  const std::vector<uint8_t> got(hwc.data_ptr<uint8_t>(), hwc.data_ptr<uint8_t>() + hwc.numel());
  EXPECT_EQ(got, expected);
  if (!compare_with_stb) return;
  const auto reference = stb_decode(file, channels);
  ASSERT_TRUE(reference.failure.empty()) << reference.failure;
  EXPECT_EQ(reference.pixels, expected) << "stb_image decodes the same file differently";
}

// Appends 0xRRGGBB as the samples R, G, B.
void append_rgb(std::vector<uint8_t>& pixels, uint32_t colour) {
  pixels.insert(pixels.end(), {static_cast<uint8_t>(colour >> 16), static_cast<uint8_t>(colour >> 8),
                               static_cast<uint8_t>(colour)});
}

// 5-bit and 6-bit fields widen by repeating their bits: v -> (v << 3) | (v >> 2) for 5 bits.
uint8_t widen(uint32_t value, int bits) {
  return static_cast<uint8_t>(bits == 5 ? (value << 3) | (value >> 2) : (value << 2) | (value >> 4));
}

TEST(BmpDecoder, TwentyFourBitBottomUpAndTopDown) {
  for (bool top_down : {false, true}) {
    BmpSpec spec;
    spec.top_down = top_down;
    std::vector<uint8_t> expected;
    const auto colour = [](int x, int y) { return 0x10203u * static_cast<uint32_t>(x + 7 * y) + 0x400000u; };
    for (int y = 0; y < spec.height; ++y) {
      for (int x = 0; x < spec.width; ++x) {
        const uint32_t c = colour(x, y);
        append_rgb(expected, c);
      }
    }
    expect_decodes_to(make_bmp(spec, colour), spec.width, spec.height, 3, expected);
  }
}

TEST(BmpDecoder, PaletteDepthsOneFourEight) {
  for (int bits : {1, 4, 8}) {
    BmpSpec spec;
    spec.bits = bits;
    spec.width = 13;  // rows end inside a byte for 1 and 4 bits
    spec.height = 4;
    const uint32_t entries = bits == 8 ? 200 : 1u << bits;
    for (uint32_t i = 0; i < entries; ++i) spec.palette.push_back(0x030507u * i + 0x100000u * (i % 3));
    const auto index = [&](int x, int y) { return static_cast<uint32_t>(x * 3 + y * 5) % entries; };
    std::vector<uint8_t> expected;
    for (int y = 0; y < spec.height; ++y) {
      for (int x = 0; x < spec.width; ++x) {
        const uint32_t c = spec.palette[index(x, y)];
        append_rgb(expected, c);
      }
    }
    SCOPED_TRACE(bits);
    expect_decodes_to(make_bmp(spec, index), spec.width, spec.height, 3, expected);
  }
}

TEST(BmpDecoder, CoreHeaderWithThreeBytePaletteEntries) {
  BmpSpec spec;
  spec.header_size = 12;
  spec.bits = 8;
  spec.palette = {0x000000, 0xFF0000, 0x00FF00, 0x0000FF, 0x123456};
  const auto index = [](int x, int y) { return static_cast<uint32_t>(x + y) % 5; };
  std::vector<uint8_t> expected;
  for (int y = 0; y < spec.height; ++y) {
    for (int x = 0; x < spec.width; ++x) {
      const uint32_t c = spec.palette[index(x, y)];
      append_rgb(expected, c);
    }
  }
  // Not compared with stb_image 2.27: after a core header it takes the palette to hold
  // (offset - 38) / 3 entries instead of (offset - 26) / 3, and reads 4 entries short (the
  // pixels of indices 1..4 here came out as stale memory).
  expect_decodes_to(make_bmp(spec, index), spec.width, spec.height, 3, expected,
                    /*compare_with_stb=*/false);
}

TEST(BmpDecoder, SixteenBitDefaultFiveFiveFiveAndFiveSixFiveBitFields) {
  // Default (no compression): x1RRRRRGGGGGBBBBB.
  BmpSpec plain;
  plain.bits = 16;
  const auto word555 = [](int x, int y) {
    return static_cast<uint32_t>((x * 6 % 32) << 10 | (y * 9 % 32) << 5 | ((x + y) * 5 % 32));
  };
  std::vector<uint8_t> expected;
  for (int y = 0; y < plain.height; ++y) {
    for (int x = 0; x < plain.width; ++x) {
      const uint32_t w = word555(x, y);
      expected.insert(expected.end(), {widen(w >> 10 & 31, 5), widen(w >> 5 & 31, 5), widen(w & 31, 5)});
    }
  }
  expect_decodes_to(make_bmp(plain, word555), plain.width, plain.height, 3, expected);

  BmpSpec fields = plain;
  fields.compression = 3;
  fields.masks = {0xF800, 0x07E0, 0x001F};
  const auto word565 = [](int x, int y) {
    return static_cast<uint32_t>((x * 7 % 32) << 11 | (y * 13 % 64) << 5 | ((x + 2 * y) % 32));
  };
  expected.clear();
  for (int y = 0; y < fields.height; ++y) {
    for (int x = 0; x < fields.width; ++x) {
      const uint32_t w = word565(x, y);
      expected.insert(expected.end(), {widen(w >> 11 & 31, 5), widen(w >> 5 & 63, 6), widen(w & 31, 5)});
    }
  }
  expect_decodes_to(make_bmp(fields, word565), fields.width, fields.height, 3, expected);
}

TEST(BmpDecoder, ThirtyTwoBitAlphaKeptOrOpaqueWhenUnused) {
  BmpSpec spec;
  spec.bits = 32;
  const auto argb = [](int x, int y) {
    return static_cast<uint32_t>((x * 40 + 5) << 24 | (y * 60) << 16 | (x * 20) << 8 | (x + y));
  };
  std::vector<uint8_t> expected;
  for (int y = 0; y < spec.height; ++y) {
    for (int x = 0; x < spec.width; ++x) {
      const uint32_t w = argb(x, y);
      expected.insert(expected.end(), {static_cast<uint8_t>(w >> 16), static_cast<uint8_t>(w >> 8),
                                       static_cast<uint8_t>(w), static_cast<uint8_t>(w >> 24)});
    }
  }
  expect_decodes_to(make_bmp(spec, argb), spec.width, spec.height, 4, expected);

  // The top byte zero everywhere: an unused byte, drawn opaque.
  const auto rgb = [&](int x, int y) { return argb(x, y) & 0xFFFFFF; };
  for (size_t i = 3; i < expected.size(); i += 4) expected[i] = 255;
  expect_decodes_to(make_bmp(spec, rgb), spec.width, spec.height, 4, expected);
}

TEST(BmpDecoder, VersionFiveHeaderWithAlphaMaskAndMissingLastRowPadding) {
  BmpSpec spec;
  spec.bits = 32;
  spec.header_size = 124;
  spec.compression = 3;
  spec.masks = {0x0000FF00, 0x00FF0000, 0xFF000000, 0x000000FF};  // B, G, R, A in memory order
  spec.width = 3;
  const auto word = [](int x, int y) {
    return static_cast<uint32_t>((x * 70) << 8 | (y * 80) << 16 | (x * 30 + y) << 24 | (200 - x));
  };
  std::vector<uint8_t> expected;
  for (int y = 0; y < spec.height; ++y) {
    for (int x = 0; x < spec.width; ++x) {
      const uint32_t w = word(x, y);
      expected.insert(expected.end(), {static_cast<uint8_t>(w >> 8), static_cast<uint8_t>(w >> 16),
                                       static_cast<uint8_t>(w >> 24), static_cast<uint8_t>(w)});
    }
  }
  expect_decodes_to(make_bmp(spec, word), spec.width, spec.height, 4, expected);

  // Rows of 24-bit pixels padded to 4 bytes; a file without the last row's padding still decodes.
  BmpSpec short_spec;
  short_spec.drop_last_row_padding = true;
  const auto colour = [](int x, int y) { return static_cast<uint32_t>(x * 0x30201 + y * 0x10000); };
  const Bytes file = make_bmp(short_spec, colour);
  EXPECT_EQ(decode_image(file).size(2), short_spec.width);
}

TEST(BmpDecoder, ChannelConversionFollowsStb) {
  BmpSpec spec;
  const auto colour = [](int x, int y) { return static_cast<uint32_t>(x * 0x332211 + y * 0x0A0B0C); };
  const Bytes file = make_bmp(spec, colour);
  for (int channels : {1, 2, 4}) {
    const at::Tensor hwc = decode_image(file, channels).permute({1, 2, 0}).contiguous();
    const std::vector<uint8_t> got(hwc.data_ptr<uint8_t>(), hwc.data_ptr<uint8_t>() + hwc.numel());
    EXPECT_EQ(got, stb_decode(file, channels).pixels) << channels << " channels";
  }
}

TEST(BmpDecoder, BadFilesGetClearErrors) {
  BmpSpec spec;
  const auto colour = [](int, int) { return 0x808080u; };
  const Bytes good = make_bmp(spec, colour);
  const auto message = [](const Bytes& file) {
    return error_message_of([&] { (void)decode_image(file, 0, "bad.bmp"); });
  };
  auto edited = [&](size_t at, uint32_t value, int width) {
    Bytes file = good;
    for (int i = 0; i < width; ++i) file[at + i] = static_cast<uint8_t>(value >> (8 * i));
    return file;
  };
  EXPECT_NE(message(Bytes(good.begin(), good.end() - 4)).find("truncated BMP"), std::string::npos);
  EXPECT_NE(message(Bytes(good.begin(), good.begin() + 20)).find("truncated BMP"), std::string::npos);
  EXPECT_NE(message(edited(14, 20, 4)).find("unsupported BMP header of 20 bytes"), std::string::npos);
  EXPECT_NE(message(edited(28, 2, 2)).find("unsupported BMP depth of 2 bits"), std::string::npos);
  EXPECT_NE(message(edited(26, 2, 2)).find("2 colour planes"), std::string::npos);
  EXPECT_NE(message(edited(18, 0, 4)).find("image size 0x3"), std::string::npos);
  EXPECT_NE(message(edited(30, 1, 4)).find("RLE-compressed BMP"), std::string::npos);
  EXPECT_NE(message(edited(30, 4, 4)).find("unsupported BMP compression 4"), std::string::npos);
  // 10000 x 10000 pixels, more than the 67 M the decoder allows, refused before reading pixels.
  Bytes huge = edited(18, 10000, 4);
  set32(huge, 22, 10000);
  EXPECT_NE(message(huge).find("more than the 67108864"), std::string::npos);
  const std::string named = message(edited(14, 20, 4));
  EXPECT_NE(named.find("cannot decode image 'bad.bmp'"), std::string::npos) << named;

  BmpSpec fields;
  fields.bits = 16;
  fields.compression = 3;
  fields.masks = {0xF00F, 0x0F00, 0x00F0};
  EXPECT_NE(message(make_bmp(fields, colour)).find("red bit field mask 0x0000f00f is not one run"),
            std::string::npos);
  fields.masks = {0, 0, 0};
  EXPECT_NE(message(make_bmp(fields, colour)).find("masks are all zero"), std::string::npos);

  BmpSpec palette;
  palette.bits = 4;
  palette.palette.assign(17, 0);
  EXPECT_NE(message(make_bmp(palette, [](int, int) { return 1u; })).find("a palette of 17 colours"),
            std::string::npos);
  palette.palette.clear();
  EXPECT_NE(message(make_bmp(palette, [](int, int) { return 1u; })).find("need a palette"),
            std::string::npos);
  EXPECT_NE(message(Bytes{'G', 'I', 'F', '8', '9', 'a'}).find("not a PNG, JPEG or BMP file"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
