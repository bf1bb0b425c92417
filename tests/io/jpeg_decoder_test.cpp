// JPEG reading (libjpeg-turbo, through decode_image: src/io/image_io.cpp): every fixture in
// tests/io/images/jpeg/ (written by make_jpeg_fixtures.py, from Pillow/libjpeg and from a small
// independent encoder) against stb_image, and damaged or unsupported files against the error they
// must give: libjpeg's reason, with the kinds a user meets named plainly.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/source_paths.h"
#include "common/stb_reference.h"
#include "tessera/core/error.h"
#include "tessera/io/image_io.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

fs::path fixture_path(const std::string& name) {
  return tessera::testing::source_dir() / "tests" / "io" / "images" / "jpeg" / name;
}

Bytes read_fixture(const std::string& name) {
  std::ifstream in(fixture_path(name), std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The message of the tessera::Error that decoding `bytes` throws; a failure when none is thrown.
std::string decode_error(const Bytes& bytes) {
  try {
    (void)decode_image(bytes, 0, "damaged.jpg");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected tessera::Error, the image decoded";
  return {};
}

void expect_error(const Bytes& bytes, const std::string& needle) {
  const std::string message = decode_error(bytes);
  EXPECT_NE(message.find(needle), std::string::npos)
      << "message lacks '" << needle << "': " << message;
}

// Offset of the first marker `code` (FF code) among the segments before the first scan, found by
// walking the segment lengths; -1 when absent.
int64_t find_marker(const Bytes& bytes, uint8_t code) {
  size_t at = 2;
  while (at + 4 <= bytes.size() && bytes[at] == 0xFF) {
    const uint8_t marker = bytes[at + 1];
    if (marker == code) return static_cast<int64_t>(at);
    if (marker == 0xDA) break;
    at += 2 + ((static_cast<size_t>(bytes[at + 2]) << 8) | bytes[at + 3]);
  }
  return -1;
}

struct Fixture {
  const char* name;
  int width;
  int height;
  int channels;
  // stb_image's 2:1 horizontal upsampling weighs the last chroma sample's left neighbour 3/4 for
  // the output sample at x = 2 * (chroma width - 1), where libjpeg weighs the sample itself 3/4;
  // that column differs by up to ~15 and is left out of the comparison.
  bool stb_h2v1_edge;
};

// libjpeg-turbo against stb_image 2.27 over all fixtures: the differences are rounding (stb's
// 12-bit fixed-point IDCT and reduced-precision colour conversion, libjpeg's accurate integer
// IDCT). A wrong coefficient, table or upsampling phase shows as differences of tens.
constexpr int kMaxDiff = 3;
constexpr double kMeanDiff = 0.25;

const Fixture kFixtures[] = {
    {"baseline_444_37x23.jpg", 37, 23, 3, false},
    {"baseline_422_61x45.jpg", 61, 45, 3, true},
    {"baseline_420_61x45.jpg", 61, 45, 3, false},
    {"grey_37x23.jpg", 37, 23, 1, false},
    {"progressive_420_61x45.jpg", 61, 45, 3, false},
    {"progressive_444_37x23.jpg", 37, 23, 3, false},
    {"progressive_grey_61x45.jpg", 61, 45, 1, false},
    {"optimized_420_61x45.jpg", 61, 45, 3, false},
    {"restart_420_61x45.jpg", 61, 45, 3, false},
    {"restart_progressive_61x45.jpg", 61, 45, 3, false},
    {"cmyk_37x23.jpg", 37, 23, 3, false},
    {"sof1_16bit_quant_61x45.jpg", 61, 45, 3, false},
    {"sof1_custom_61x45.jpg", 61, 45, 3, true},
    {"sampling_h1v2_61x45.jpg", 61, 45, 3, false},
    {"sampling_h4v1_61x45.jpg", 61, 45, 3, false},
    {"sampling_h3v1_61x45.jpg", 61, 45, 3, false},
    {"sampling_h2v2_chroma_61x45.jpg", 61, 45, 3, false},
    {"adobe_rgb_61x45.jpg", 61, 45, 3, false},
    {"rgb_ids_61x45.jpg", 61, 45, 3, false},
    {"ycck_61x45.jpg", 61, 45, 3, false},
};

TEST(JpegDecoder, FixturesMatchStbImage) {
  for (const Fixture& fixture : kFixtures) {
    SCOPED_TRACE(fixture.name);
    const Bytes bytes = read_fixture(fixture.name);
    const tessera::testing::StbImage reference = tessera::testing::stb_decode(bytes, 0);
    ASSERT_TRUE(reference.failure.empty()) << reference.failure;
    ASSERT_EQ(reference.width, fixture.width);
    ASSERT_EQ(reference.height, fixture.height);
    ASSERT_EQ(reference.channels, fixture.channels);

    const at::Tensor image = decode_image(bytes, 0, fixture.name).contiguous();
    ASSERT_EQ(image.scalar_type(), at::kByte);
    ASSERT_EQ(image.dim(), 3);
    ASSERT_EQ(image.size(0), fixture.channels);
    ASSERT_EQ(image.size(1), fixture.height);
    ASSERT_EQ(image.size(2), fixture.width);

    const uint8_t* ours = image.data_ptr<uint8_t>();
    const int w = fixture.width;
    const int h = fixture.height;
    const int c = fixture.channels;
    const int edge_column = fixture.stb_h2v1_edge ? 2 * ((w + 1) / 2 - 1) : -1;
    int max_diff = 0;
    double sum = 0;
    int64_t count = 0;
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        if (x == edge_column) continue;
        for (int k = 0; k < c; ++k) {
          const int theirs = reference.pixels[(static_cast<size_t>(y) * w + x) * c + k];
          const int mine = ours[(static_cast<size_t>(k) * h + y) * w + x];
          max_diff = std::max(max_diff, std::abs(theirs - mine));
          sum += std::abs(theirs - mine);
          ++count;
        }
      }
    }
    EXPECT_LE(max_diff, kMaxDiff);
    EXPECT_LT(sum / static_cast<double>(count), kMeanDiff);
  }
}

// Luma 3x2 against chroma 2x1 is a 3:2 ratio, which libjpeg (like stb_image) does not decode:
// refused by name.
TEST(JpegDecoder, RefusesNonIntegerSamplingRatiosByName) {
  expect_error(read_fixture("sampling_h3v2_ratio_61x45.jpg"), "fractional chroma sampling");
}

// Arithmetic coding, which Tessera's own decoder refused, is read: the fixture is
// progressive_420_61x45.jpg's DCT coefficients re-coded with arithmetic coding (SOF9, by libjpeg's
// jpeg_write_coefficients with arith_code set; lossless), so the pixels must be the same.
TEST(JpegDecoder, DecodesArithmeticCoding) {
  const Bytes bytes = read_fixture("arithmetic_420_61x45.jpg");
  ASSERT_GT(find_marker(bytes, 0xC9), 0);
  const at::Tensor image = decode_image(bytes);
  EXPECT_TRUE(image.equal(decode_image(read_fixture("progressive_420_61x45.jpg"))));
}

TEST(JpegDecoder, RefusesTruncatedFiles) {
  for (const char* name :
       {"baseline_420_61x45.jpg", "progressive_420_61x45.jpg", "restart_420_61x45.jpg"}) {
    SCOPED_TRACE(name);
    const Bytes bytes = read_fixture(name);
    const int64_t sos_at = find_marker(bytes, 0xDA);
    ASSERT_GT(sos_at, 0);
    const auto sos = static_cast<size_t>(sos_at);
    // After the first segment, inside a header segment, just into the first scan's data, halfway,
    // and just before EOI.
    for (size_t cut : {size_t{20}, size_t{30}, sos + 20, bytes.size() / 2 + 7, bytes.size() - 3}) {
      SCOPED_TRACE(cut);
      expect_error(Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut)),
                   "truncated");
    }
  }
  // Only the EOI missing: the image is complete, and decodes.
  const Bytes bytes = read_fixture("baseline_420_61x45.jpg");
  EXPECT_NO_THROW((void)decode_image(Bytes(bytes.begin(), bytes.end() - 2)));
}

TEST(JpegDecoder, RefusesUnsupportedKindsByName) {
  const Bytes bytes = read_fixture("baseline_444_37x23.jpg");
  const int64_t sof = find_marker(bytes, 0xC0);
  ASSERT_GT(sof, 0);
  auto with_marker = [&](uint8_t code) {
    Bytes edited = bytes;
    edited[static_cast<size_t>(sof) + 1] = code;
    return edited;
  };
  expect_error(with_marker(0xC3), "JPEG with lossless coding (SOF3) is not supported");
  expect_error(with_marker(0xCB), "JPEG with lossless coding (SOF11) is not supported");
  expect_error(with_marker(0xC5), "JPEG with hierarchical coding (SOF5) is not supported");

  Bytes twelve_bit = bytes;
  twelve_bit[static_cast<size_t>(sof) + 4] = 12;  // sample precision
  expect_error(twelve_bit, "JPEG with 12-bit samples is not supported");

  Bytes dnl_height = bytes;  // height 0: to be set by a DNL marker
  dnl_height[static_cast<size_t>(sof) + 5] = 0;
  dnl_height[static_cast<size_t>(sof) + 6] = 0;
  expect_error(dnl_height, "empty image (width or height 0)");

  Bytes zero_width = bytes;
  zero_width[static_cast<size_t>(sof) + 7] = 0;
  zero_width[static_cast<size_t>(sof) + 8] = 0;
  expect_error(zero_width, "empty image (width or height 0)");
}

TEST(JpegDecoder, RefusesOversizedHeadersBeforeAllocating) {
  // 10000 x 10000 (100 M pixels, above 8192 x 8192) in a file of 700 bytes: refused from the
  // frame header, before libjpeg or Tessera allocates anything that size.
  const Bytes bytes = read_fixture("baseline_444_37x23.jpg");
  const int64_t sof = find_marker(bytes, 0xC0);
  ASSERT_GT(sof, 0);
  Bytes huge = bytes;
  for (size_t i : {5, 7}) {
    huge[static_cast<size_t>(sof) + i] = 0x27;  // 0x2710 = 10000
    huge[static_cast<size_t>(sof) + i + 1] = 0x10;
  }
  expect_error(huge, "JPEG image of 10000x10000 pixels is larger than the limit");
  // Past JPEG's own 65500: libjpeg's refusal.
  for (size_t i = 5; i <= 8; ++i) huge[static_cast<size_t>(sof) + i] = 0xFF;
  expect_error(huge, "Maximum supported image dimension is 65500 pixels");
}

TEST(JpegDecoder, RefusesBadTables) {
  const Bytes bytes = read_fixture("baseline_444_37x23.jpg");
  const int64_t sos_at = find_marker(bytes, 0xDA);
  ASSERT_GT(sos_at, 0);
  const auto sos = static_cast<size_t>(sos_at);
  // SOS: FF DA, length (2), count, then (id, DC << 4 | AC) per component. Table 3 is never
  // defined in a Pillow file.
  Bytes undefined_table = bytes;
  undefined_table[sos + 6] = 0x33;
  expect_error(undefined_table, "Huffman table 0x03 was not defined");

  Bytes unknown_component = bytes;
  unknown_component[sos + 5] = 0x77;
  expect_error(unknown_component, "Invalid component ID 119");

  const int64_t dht_at = find_marker(bytes, 0xC4);
  ASSERT_GT(dht_at, 0);
  const auto dht = static_cast<size_t>(dht_at);
  // DHT: FF C4, length (2), class/number, 16 code counts. 200 codes of length 16 on top of the
  // table's own 12 and more make more than 256.
  Bytes too_many_codes = bytes;
  too_many_codes[dht + 5 + 15] = 250;
  expect_error(too_many_codes, "Bogus Huffman table definition");

  // The DC table's counts are 0 1 5 1 1 ...: three codes of length 1 and two of length 3 keep
  // the total but over-subscribe length 1.
  Bytes oversubscribed = bytes;
  ASSERT_EQ(oversubscribed[dht + 7], 5);
  oversubscribed[dht + 5] = 3;
  oversubscribed[dht + 7] = 2;
  expect_error(oversubscribed, "Bogus Huffman table definition");

  const int64_t dqt_at = find_marker(bytes, 0xDB);
  ASSERT_GT(dqt_at, 0);
  const auto dqt = static_cast<size_t>(dqt_at);
  Bytes no_quant_table = bytes;  // the table defined as number 3, which no component uses
  no_quant_table[dqt + 4] = 0x03;
  expect_error(no_quant_table, "Quantization table 0x00 was not defined");
}

TEST(JpegDecoder, CorruptEntropyCodedDataIsAnError) {
  // libjpeg only warns about corrupt scan data and decodes on with made-up coefficients; the
  // reader turns that into an error rather than return a damaged picture.
  const Bytes bytes = read_fixture("baseline_420_61x45.jpg");
  const int64_t sos_at = find_marker(bytes, 0xDA);
  ASSERT_GT(sos_at, 0);
  Bytes damaged = bytes;
  // A restart marker (FF D0) where none is expected, in the middle of the scan data.
  const size_t middle = (static_cast<size_t>(sos_at) + bytes.size()) / 2;
  damaged[middle] = 0xFF;
  damaged[middle + 1] = 0xD0;
  const std::string message = decode_error(damaged);
  EXPECT_NE(message.find("Corrupt JPEG data"), std::string::npos) << message;
}

TEST(JpegDecoder, ConvertsChannelsOnRequest) {
  // decode_image converts after decoding: grey JPEG to 3 channels repeats the grey.
  const Bytes bytes = read_fixture("grey_37x23.jpg");
  const at::Tensor grey = decode_image(bytes, 1);
  const at::Tensor rgb = decode_image(bytes, 3);
  ASSERT_EQ(rgb.size(0), 3);
  for (int64_t k = 0; k < 3; ++k) EXPECT_TRUE(rgb[k].equal(grey[0]));
}

}  // namespace
}  // namespace tessera
