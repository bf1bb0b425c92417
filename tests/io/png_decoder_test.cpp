// PNG reading (libpng, through decode_image: src/io/image_io.cpp): the fixtures of
// tests/io/images/png/ (written by make_png_fixtures.py, an encoder of its own: every colour type
// and bit depth, Adam7, all five filters, tRNS, many IDATs, ancillary chunks) against stb_image as
// the independent reference decoder; hand-built files for the conversions (16-bit, palette, tRNS)
// and for the limits checked before allocating; broken files against the errors they must give.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error_message.h"
#include "common/source_paths.h"
#include "common/stb_reference.h"
#include "tessera/core/error.h"
#include "tessera/io/image_io.h"

namespace tessera {
namespace {

using tessera::testing::expect_error;

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using tessera::testing::stb_decode;
using tessera::testing::StbImage;

fs::path fixture_folder() {
  return tessera::testing::source_dir() / "tests" / "io" / "images" / "png";
}

Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<fs::path> fixtures() {
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(fixture_folder())) {
    if (entry.path().extension() == ".png") paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

// The decoded [C, H, W] tensor against stb's interleaved [H, W, C] pixels, sample for sample.
void expect_same_image(const at::Tensor& image, const StbImage& reference,
                       const std::string& what) {
  ASSERT_TRUE(reference.failure.empty()) << what << ": stb failed: " << reference.failure;
  ASSERT_EQ(image.dim(), 3) << what;
  ASSERT_EQ(image.scalar_type(), at::kByte) << what;
  ASSERT_EQ(image.size(0), reference.channels) << what;
  ASSERT_EQ(image.size(1), reference.height) << what;
  ASSERT_EQ(image.size(2), reference.width) << what;
  const at::Tensor interleaved = image.permute({1, 2, 0}).contiguous();
  const uint8_t* ours = interleaved.data_ptr<uint8_t>();
  ASSERT_EQ(static_cast<size_t>(interleaved.numel()), reference.pixels.size()) << what;
  size_t differing = 0;
  size_t first = 0;
  for (size_t i = reference.pixels.size(); i-- > 0;) {
    if (ours[i] != reference.pixels[i]) {
      ++differing;
      first = i;
    }
  }
  EXPECT_EQ(differing, 0u) << what << ": " << differing << " samples differ, the first at sample "
                           << first << " (ours " << int{ours[first]} << ", stb "
                           << int{reference.pixels[first]} << ")";
}

// --- building PNGs (for the broken ones): chunks with correct CRCs unless told otherwise ---

void append_u32(Bytes& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

Bytes chunk(std::string_view tag, const Bytes& data) {
  Bytes out;
  append_u32(out, static_cast<uint32_t>(data.size()));
  out.insert(out.end(), tag.begin(), tag.end());
  out.insert(out.end(), data.begin(), data.end());
  // The CRC covers the type and the data, here contiguous (never a null pointer for zlib, which
  // would answer its initial value instead).
  const uLong crc = crc32(0L, out.data() + 4, static_cast<uInt>(4 + data.size()));
  append_u32(out, static_cast<uint32_t>(crc));
  return out;
}

Bytes png_file(std::initializer_list<Bytes> chunks) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  for (const Bytes& c : chunks) out.insert(out.end(), c.begin(), c.end());
  return out;
}

Bytes ihdr(uint32_t width, uint32_t height, uint8_t depth, uint8_t colour_type,
           uint8_t interlace = 0) {
  Bytes data;
  append_u32(data, width);
  append_u32(data, height);
  data.insert(data.end(), {depth, colour_type, 0, 0, interlace});
  return chunk("IHDR", data);
}

Bytes deflate(const Bytes& raw) {
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  Bytes out(size);
  EXPECT_EQ(compress2(out.data(), &size, raw.data(), static_cast<uLong>(raw.size()), 9), Z_OK);
  out.resize(size);
  return out;
}

Bytes idat(const Bytes& raw) { return chunk("IDAT", deflate(raw)); }
Bytes iend() { return chunk("IEND", {}); }

// A valid 3x2 RGB image, 8 bits: the base the broken files below change one thing of.
Bytes rgb_scanlines(uint8_t filter = 0) {
  Bytes raw;
  for (int y = 0; y < 2; ++y) {
    raw.push_back(filter);
    for (int x = 0; x < 9; ++x) raw.push_back(static_cast<uint8_t>(10 * y + x));
  }
  return raw;
}

// `bytes` without its (first) chunk of type `tag`.
Bytes without_chunk(const Bytes& bytes, std::string_view tag) {
  for (size_t at = 8; at + 12 <= bytes.size();) {
    const uint32_t length = (uint32_t{bytes[at]} << 24) | (uint32_t{bytes[at + 1]} << 16) |
                            (uint32_t{bytes[at + 2]} << 8) | uint32_t{bytes[at + 3]};
    if (std::memcmp(bytes.data() + at + 4, tag.data(), 4) == 0) {
      Bytes out(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(at));
      out.insert(out.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at + 12 + length),
                 bytes.end());
      return out;
    }
    at += 12 + length;
  }
  ADD_FAILURE() << "no " << tag << " chunk";
  return bytes;
}

at::Tensor decode(const Bytes& bytes, int channels = 0) {
  return decode_image(std::span<const uint8_t>(bytes.data(), bytes.size()), channels, "test.png");
}

// --- valid files against stb_image ---

TEST(PngDecoder, EveryFixtureDecodesAsStbDoes) {
  const std::vector<fs::path> paths = fixtures();
  // make_png_fixtures.py writes 63; fewer means the folder is missing or incomplete.
  ASSERT_GE(paths.size(), 60u) << "fixtures missing under " << fixture_folder();
  for (const fs::path& path : paths) {
    Bytes bytes = read_bytes(path);
    ASSERT_GT(bytes.size(), 33u) << path;
    const std::string name = path.filename().string();
    // stb ignores CRCs and so applies a tRNS whose CRC is wrong; we skip that chunk, as a bad
    // ancillary chunk must be. The reference is then the file without it.
    const Bytes reference_bytes =
        name.find("bad_crc_trns") != std::string::npos ? without_chunk(bytes, "tRNS") : bytes;
    const int depth = bytes[24];
    const bool colour = (bytes[25] & 2) != 0;
    for (int channels : {0, 1, 3, 4}) {
      const std::string what = name + " with channels " + std::to_string(channels);
      const at::Tensor image = decode(bytes, channels);
      StbImage reference = stb_decode(reference_bytes, channels);
      if (channels == 1 && colour && depth == 16) {
        // stb computes grey from 16-bit colour at 16 bits and then keeps the high byte, which
        // can be one above grey computed from the 8-bit samples, as decode_image does (its
        // documented rule, (77 R + 150 G + 29 B) >> 8). The reference is that rule applied to
        // stb's 8-bit RGB.
        const StbImage rgb = stb_decode(reference_bytes, 3);
        ASSERT_TRUE(rgb.failure.empty()) << what << ": " << rgb.failure;
        for (size_t i = 0; i < reference.pixels.size(); ++i) {
          const uint8_t* p = rgb.pixels.data() + 3 * i;
          reference.pixels[i] = static_cast<uint8_t>((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8);
        }
      }
      expect_same_image(image, reference, what);
    }
  }
}

TEST(PngDecoder, FixturesHaveTheExpectedChannelCounts) {
  // Independent of stb: the channel count follows from the colour type and tRNS alone.
  const auto channels_of = [](const std::string& name) {
    return decode(read_bytes(fixture_folder() / name)).size(0);
  };
  EXPECT_EQ(channels_of("ct0_d1_plain.png"), 1);
  EXPECT_EQ(channels_of("ct0_d16_key_adam7.png"), 2);  // grey + colour key gains alpha
  EXPECT_EQ(channels_of("ct2_d8_plain.png"), 3);
  EXPECT_EQ(channels_of("ct2_d16_key_plain.png"), 4);  // RGB + colour key gains alpha
  EXPECT_EQ(channels_of("ct3_d4_plain.png"), 3);       // palette without tRNS: RGB
  EXPECT_EQ(channels_of("ct3_d8_trns17of40_plain.png"), 4);
  EXPECT_EQ(channels_of("ct4_d8_adam7.png"), 2);
  EXPECT_EQ(channels_of("ct6_d16_plain.png"), 4);
  EXPECT_EQ(channels_of("bad_crc_trns_ct0_d8_plain.png"), 1);  // the tRNS with a bad CRC is skipped
}

TEST(PngDecoder, SixteenBitColourKeyIsComparedAtFullDepth) {
  // The fixture's key pixels share their high byte with neighbours that are not the key: only
  // a comparison of all 16 bits makes the first transparent and the second opaque. stb
  // compares at 16 bits as well, so the counts must agree with it.
  const Bytes bytes = read_bytes(fixture_folder() / "ct0_d16_key_plain.png");
  const at::Tensor image = decode(bytes);
  ASSERT_EQ(image.size(0), 2);
  const int64_t transparent = (image[1] == 0).sum().item<int64_t>();
  const int64_t opaque = (image[1] == 255).sum().item<int64_t>();
  EXPECT_GT(transparent, 0);
  EXPECT_EQ(transparent + opaque, image.size(1) * image.size(2));
  const StbImage reference = stb_decode(bytes, 0);
  int64_t stb_transparent = 0;
  for (size_t i = 1; i < reference.pixels.size(); i += 2)
    stb_transparent += reference.pixels[i] == 0;
  EXPECT_EQ(transparent, stb_transparent);
}

TEST(PngDecoder, MissingIendAndTrailingBytesAreAccepted) {
  const Bytes bytes = read_bytes(fixture_folder() / "ct2_d8_plain.png");
  const StbImage reference = stb_decode(bytes, 0);
  // The last 12 bytes are IEND: without it the image data is still complete.
  const Bytes no_iend(bytes.begin(), bytes.end() - 12);
  expect_same_image(decode(no_iend), reference, "without IEND");
  Bytes trailing = bytes;
  trailing.insert(trailing.end(), {'g', 'a', 'r', 'b', 'a', 'g', 'e'});
  expect_same_image(decode(trailing), reference, "with bytes after IEND");
}

TEST(PngDecoder, HandBuiltImageDecodesToItsSamples) {
  // No reference decoder: the samples are the scanlines themselves (filter 0, 8-bit RGB).
  const at::Tensor image = decode(png_file({ihdr(3, 2, 8, 2), idat(rgb_scanlines()), iend()}));
  ASSERT_EQ(image.sizes().vec(), (std::vector<int64_t>{3, 2, 3}));
  for (int64_t y = 0; y < 2; ++y) {
    for (int64_t x = 0; x < 3; ++x) {
      for (int64_t c = 0; c < 3; ++c) {
        EXPECT_EQ(image[c][y][x].item<int>(), 10 * y + 3 * x + c);
      }
    }
  }
}

TEST(PngDecoder, SixteenBitSamplesKeepTheirHighByte) {
  // One 16-bit grey row: 0x1234, 0xABFF, 0x00FF, no reference decoder needed.
  const Bytes row = {0, 0x12, 0x34, 0xAB, 0xFF, 0x00, 0xFF};
  const at::Tensor image = decode(png_file({ihdr(3, 1, 16, 0), idat(row), iend()}));
  ASSERT_EQ(image.sizes().vec(), (std::vector<int64_t>{1, 1, 3}));
  EXPECT_EQ(image[0][0][0].item<int>(), 0x12);
  EXPECT_EQ(image[0][0][1].item<int>(), 0xAB);
  EXPECT_EQ(image[0][0][2].item<int>(), 0x00);
}

TEST(PngDecoder, PaletteExpandsToRgbOrRgbaWithTrns) {
  // 2-bit indices 0 1 2 1 in one byte (00 01 10 01), a palette of three colours.
  const Bytes palette = chunk("PLTE", {255, 0, 0, 0, 255, 0, 0, 0, 255});
  const Bytes row = {0, 0b00011001};
  const at::Tensor rgb = decode(png_file({ihdr(4, 1, 2, 3), palette, idat(row), iend()}));
  ASSERT_EQ(rgb.sizes().vec(), (std::vector<int64_t>{3, 1, 4}));
  const std::vector<std::vector<int>> colours = {
      {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {0, 255, 0}};
  for (int64_t x = 0; x < 4; ++x) {
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(rgb[c][0][x].item<int>(), colours[x][c]) << x;
  }
  // tRNS shorter than the palette: entries past it are opaque.
  const at::Tensor rgba =
      decode(png_file({ihdr(4, 1, 2, 3), palette, chunk("tRNS", {7}), idat(row), iend()}));
  ASSERT_EQ(rgba.sizes().vec(), (std::vector<int64_t>{4, 1, 4}));
  EXPECT_EQ(rgba[3][0][0].item<int>(), 7);
  EXPECT_EQ(rgba[3][0][1].item<int>(), 255);
  EXPECT_EQ(rgba[3][0][2].item<int>(), 255);
  EXPECT_TRUE(rgba.narrow(0, 0, 3).equal(rgb));
}

TEST(PngDecoder, InterlacedAndPlainFilesOfOnePictureDecodeAlike) {
  // The same 8-bit grey + alpha 5x4 picture written plain and Adam7-interlaced (by hand: the
  // passes' rows, each with filter 0).
  Bytes pixels;
  for (int i = 0; i < 5 * 4; ++i) pixels.insert(pixels.end(), {uint8_t(i * 11), uint8_t(255 - i)});
  Bytes plain_rows, adam7_rows;
  for (int y = 0; y < 4; ++y) {
    plain_rows.push_back(0);
    plain_rows.insert(plain_rows.end(), pixels.begin() + y * 10, pixels.begin() + (y + 1) * 10);
  }
  const int starts[7][2] = {{0, 0}, {0, 4}, {4, 0}, {0, 2}, {2, 0}, {0, 1}, {1, 0}};  // (y, x)
  const int steps[7][2] = {{8, 8}, {8, 8}, {8, 4}, {4, 4}, {4, 2}, {2, 2}, {2, 1}};
  for (int pass = 0; pass < 7; ++pass) {
    for (int y = starts[pass][0]; y < 4; y += steps[pass][0]) {
      if (starts[pass][1] >= 5) continue;
      adam7_rows.push_back(0);
      for (int x = starts[pass][1]; x < 5; x += steps[pass][1]) {
        adam7_rows.insert(adam7_rows.end(), {pixels[2 * (y * 5 + x)], pixels[2 * (y * 5 + x) + 1]});
      }
    }
  }
  const at::Tensor plain = decode(png_file({ihdr(5, 4, 8, 4), idat(plain_rows), iend()}));
  const at::Tensor adam7 = decode(png_file({ihdr(5, 4, 8, 4, 1), idat(adam7_rows), iend()}));
  ASSERT_EQ(plain.sizes().vec(), (std::vector<int64_t>{2, 4, 5}));
  EXPECT_TRUE(adam7.equal(plain));
  EXPECT_EQ(plain[0][3][4].item<int>(), 19 * 11);
  EXPECT_EQ(plain[1][3][4].item<int>(), 255 - 19);
}

// --- limits checked before allocating ---

TEST(PngDecoder, OversizedHeadersAreRefusedBeforeAllocating) {
  const Bytes data = idat(rgb_scanlines());
  // Above 67 M pixels (8192 x 8192): refused from IHDR, whatever follows (64 GiB of RGBA here).
  expect_error(
      [&] {
        decode(png_file({ihdr(10000, 10000, 8, 2), data, iend()}));
      },
      {"10000x10000", "exceeds the limit"});
  expect_error(
      [&] {
        decode(png_file({ihdr(131072, 131072, 16, 6), data, iend()}));
      },
      {"exceeds the limit"});
  // Within the limit, but more image data than the file could hold at deflate's best ratio
  // (1032:1): refused before the 256 MiB pixel buffer is allocated.
  expect_error(
      [&] {
        decode(png_file({ihdr(8192, 8192, 8, 6), data, iend()}));
      },
      {"truncated", "8192x8192", "more than its"});
  // Plausible for the file's size (an ancillary chunk of 600 bytes makes it big enough for 2048 x
  // 2048 at 1 bit), the header passes; the missing data is then found missing.
  expect_error(
      [&] {
        decode(png_file({ihdr(2048, 2048, 1, 0), chunk("zeRo", Bytes(600, 0)), data, iend()}));
      },
      {"Not enough image data"});
}

// --- broken files ---

TEST(PngDecoder, BadSignatureIsRefused) {
  Bytes bytes = read_bytes(fixture_folder() / "ct2_d8_plain.png");
  bytes[1] = 'Q';
  expect_error([&] { decode(bytes); }, {"not a PNG"});
}

TEST(PngDecoder, TruncatedFilesAreRefused) {
  const Bytes bytes = read_bytes(fixture_folder() / "ct6_d8_adam7.png");
  // The signature alone, inside IHDR, right after IHDR, inside the IDAT chunk, and one byte
  // short of the end of the last IDAT (its CRC).
  const size_t idat_end = bytes.size() - 12;
  for (size_t size :
       {size_t{8}, size_t{20}, size_t{33}, size_t{60}, bytes.size() / 2, idat_end - 1}) {
    SCOPED_TRACE(size);
    const Bytes cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
    expect_error([&] { decode(cut); }, {"cannot decode image 'test.png'", "PNG file is truncated"});
  }
}

TEST(PngDecoder, IncompleteImageDataIsRefused) {
  // Well-formed chunks around a zlib stream cut in half: the image data ends early.
  const Bytes stream = deflate(rgb_scanlines());
  const Bytes half(stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(stream.size() / 2));
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 8, 2), chunk("IDAT", half), iend()}));
      },
      {"Not enough image data"});
  // No image data at all.
  expect_error([&] { decode(png_file({ihdr(3, 2, 8, 2), iend()})); }, {"IEND: out of place"});
  expect_error([&] { decode(png_file({ihdr(3, 2, 8, 2)})); }, {"truncated"});
}

TEST(PngDecoder, BadIhdrCrcIsRefused) {
  Bytes bytes = read_bytes(fixture_folder() / "ct2_d8_plain.png");
  bytes[29] ^= 0x01;  // IHDR's CRC: signature 8 + length 4 + type 4 + data 13
  expect_error([&] { decode(bytes); }, {"IHDR", "CRC error"});
}

TEST(PngDecoder, BadFilterTypeIsRefused) {
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 8, 2), idat(rgb_scanlines(5)), iend()}));
      },
      {"bad adaptive filter value"});
}

TEST(PngDecoder, BadIhdrFieldsAreRefused) {
  // libpng warns what is wrong, then fails with "Invalid IHDR data": the message has both.
  const Bytes data = idat(rgb_scanlines());
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 3, 2), data, iend()}));
      },
      {"Invalid IHDR data", "Invalid bit depth"});
  expect_error(
      [&] {
        decode(png_file({ihdr(0, 2, 8, 2), data, iend()}));
      },
      {"Invalid IHDR data", "width is zero"});
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 0, 8, 2), data, iend()}));
      },
      {"Invalid IHDR data", "height is zero"});
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 8, 5), data, iend()}));
      },
      {"Invalid IHDR data", "color type"});
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 8, 2, 2), data, iend()}));
      },
      {"Invalid IHDR data", "interlace method"});
}

TEST(PngDecoder, PaletteProblemsAreRefused) {
  const Bytes two_entries = chunk("PLTE", {255, 0, 0, 0, 0, 255});
  const Bytes indices = {0, 0, 1, 7};  // one 3x1 row: filter 0, then index 7 past the palette
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 1, 8, 3), two_entries, idat(indices), iend()}));
      },
      {"palette index 7 out of range", "2 entries"});
  const Bytes in_range = {0, 1, 0, 1};  // filter 0, indices 1 0 1
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 1, 8, 3), idat(in_range), iend()}));
      },
      {"Missing PLTE"});
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 1, 8, 3), chunk("PLTE", {1, 2, 3, 4}), idat(in_range), iend()}));
      },
      {"PLTE", "invalid"});
}

TEST(PngDecoder, BadAncillaryChunksAreSkipped) {
  // A tRNS longer than the palette, or of the wrong length for RGB, is ignored (libpng's benign
  // errors), as a bad ancillary chunk may be: the image decodes without alpha.
  const Bytes two_entries = chunk("PLTE", {255, 0, 0, 0, 0, 255});
  const Bytes in_range = {0, 1, 0, 1};
  EXPECT_EQ(decode(png_file({ihdr(3, 1, 8, 3), two_entries, chunk("tRNS", {1, 2, 3}),
                             idat(in_range), iend()}))
                .size(0),
            3);
  EXPECT_EQ(
      decode(png_file({ihdr(3, 2, 8, 2), chunk("tRNS", {0, 1, 0}), idat(rgb_scanlines()), iend()}))
          .size(0),
      3);
}

TEST(PngDecoder, CorruptImageDataAndUnknownCriticalChunksAreRefused) {
  Bytes garbage = deflate(rgb_scanlines());
  garbage[2] ^= 0xFF;  // the first deflate block header and what follows it
  garbage[3] ^= 0xFF;
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 8, 2), chunk("IDAT", garbage), iend()}));
      },
      {"corrupt or unsupported PNG file", "IDAT"});
  expect_error(
      [&] {
        decode(png_file({ihdr(3, 2, 8, 2), chunk("QUUX", {1}), idat(rgb_scanlines()), iend()}));
      },
      {"QUUX"});
}

}  // namespace
}  // namespace tessera
