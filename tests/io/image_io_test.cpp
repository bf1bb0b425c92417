// Image reading, PNG writing and the image grid. Decoding is checked against PNGs built here
// by hand (the PNG chunk layout around uncompressed deflate blocks), and grids against a
// per-pixel formula of the layout.
#include "tessera/io/image_io.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/temporary_folder.h"
#include "tessera/core/error.h"

namespace tessera {
namespace {

using tessera::testing::expect_error;

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

using tessera::testing::TemporaryFolder;

void write_plain(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// --- a minimal PNG encoder, independent of stb and zlib (8-bit, no interlace, no filters) ---

void append_u32(Bytes& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

// CRC-32 as PNG uses it, bit by bit: slow and plainly right.
uint32_t crc32_of(const Bytes& data) {
  uint32_t crc = 0xffffffffu;
  for (uint8_t byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// A zlib stream (RFC 1950) of deflate "stored" blocks (RFC 1951 3.2.4): valid and uncompressed,
// so the test needs no compressor of its own and does not share one with the code under test.
Bytes zlib_stored(const Bytes& data) {
  Bytes out = {0x78, 0x01};
  size_t position = 0;
  do {
    const size_t length = std::min<size_t>(65535, data.size() - position);
    out.push_back(position + length == data.size() ? 1 : 0);  // BFINAL, BTYPE 00 (stored)
    out.insert(out.end(), {static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8),
                           static_cast<uint8_t>(~length), static_cast<uint8_t>(~length >> 8)});
    out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(position),
               data.begin() + static_cast<std::ptrdiff_t>(position + length));
    position += length;
  } while (position < data.size());
  uint32_t a = 1, b = 0;  // Adler-32
  for (uint8_t byte : data) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  append_u32(out, (b << 16) | a);
  return out;
}

void append_chunk(Bytes& png, const char* type, const Bytes& data) {
  append_u32(png, static_cast<uint32_t>(data.size()));
  Bytes typed(type, type + 4);
  typed.insert(typed.end(), data.begin(), data.end());
  png.insert(png.end(), typed.begin(), typed.end());
  append_u32(png, crc32_of(typed));
}

// `interleaved` is [height, width, channels]; channels 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
Bytes hand_made_png(uint32_t width, uint32_t height, int channels, const Bytes& interleaved) {
  static const uint8_t colour_type[] = {0, 0, 4, 2, 6};
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes header;
  append_u32(header, width);
  append_u32(header, height);
  header.insert(header.end(), {8, colour_type[channels], 0, 0, 0});
  append_chunk(png, "IHDR", header);
  Bytes raw;
  const size_t stride = width * static_cast<size_t>(channels);
  for (uint32_t y = 0; y < height; ++y) {
    raw.push_back(0);  // filter type "none"
    raw.insert(raw.end(), interleaved.begin() + static_cast<std::ptrdiff_t>(y * stride),
               interleaved.begin() + static_cast<std::ptrdiff_t>((y + 1) * stride));
  }
  append_chunk(png, "IDAT", zlib_stored(raw));
  append_chunk(png, "IEND", {});
  return png;
}

TEST(ReadImage, DecodesAHandMadeRgbPng) {
  TemporaryFolder folder;
  // 2 rows x 3 columns of RGB; value = 100 * channel + 10 * row + column.
  Bytes interleaved;
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) interleaved.push_back(static_cast<uint8_t>(100 * c + 10 * y + x));
  write_plain(folder.path() / "rgb.png", hand_made_png(3, 2, 3, interleaved));

  const at::Tensor image = read_image(folder.path() / "rgb.png");
  ASSERT_EQ(image.scalar_type(), at::kByte);
  ASSERT_EQ(image.sizes(), (at::IntArrayRef{3, 2, 3}));
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) EXPECT_EQ(image[c][y][x].item<int>(), 100 * c + 10 * y + x);
}

TEST(ReadImage, ConvertsChannelCounts) {
  TemporaryFolder folder;
  const Bytes grey = {0, 50, 100, 150, 200, 250};
  write_plain(folder.path() / "grey.png", hand_made_png(3, 2, 1, grey));
  const Bytes grey_alpha = {10, 255, 20, 128};
  write_plain(folder.path() / "grey-alpha.png", hand_made_png(2, 1, 2, grey_alpha));

  const at::Tensor as_stored = read_image(folder.path() / "grey.png");
  ASSERT_EQ(as_stored.sizes(), (at::IntArrayRef{1, 2, 3}));
  EXPECT_EQ(as_stored[0][1][2].item<int>(), 250);
  const at::Tensor as_rgb = read_image(folder.path() / "grey.png", 3);
  ASSERT_EQ(as_rgb.sizes(), (at::IntArrayRef{3, 2, 3}));
  EXPECT_TRUE(as_rgb.equal(as_stored.repeat({3, 1, 1})));

  const at::Tensor with_alpha = read_image(folder.path() / "grey-alpha.png");
  ASSERT_EQ(with_alpha.sizes(), (at::IntArrayRef{2, 1, 2}));
  EXPECT_EQ(with_alpha[0][0][1].item<int>(), 20);
  EXPECT_EQ(with_alpha[1][0][1].item<int>(), 128);
}

TEST(ReadImage, ErrorsNameTheFile) {
  TemporaryFolder folder;
  expect_error([&] { read_image(folder.path() / "absent.png"); }, {"absent.png", "does not exist"});
  write_plain(folder.path() / "junk.png", {'j', 'u', 'n', 'k'});
  expect_error([&] { read_image(folder.path() / "junk.png"); }, {"junk.png", "cannot decode"});
  Bytes truncated = hand_made_png(2, 2, 1, {1, 2, 3, 4});
  truncated.resize(truncated.size() - 20);
  write_plain(folder.path() / "short.png", truncated);
  expect_error([&] { read_image(folder.path() / "short.png"); }, {"short.png", "cannot decode"});
  expect_error([&] { read_image(folder.path() / "junk.png", 5); }, {"channels", "got 5"});
}

TEST(ReadImage, OnlyPngAndJpegAreRead) {
  TemporaryFolder folder;
  // A valid 2 x 1 BMP (24-bit, bottom-up): BMP is not read since the decoders became libpng and
  // libjpeg-turbo; the error names the format.
  Bytes bmp(54 + 8, 0);
  bmp[0] = 'B', bmp[1] = 'M', bmp[2] = static_cast<uint8_t>(bmp.size()), bmp[10] = 54;
  bmp[14] = 40, bmp[18] = 2, bmp[22] = 1, bmp[26] = 1, bmp[28] = 24;
  write_plain(folder.path() / "old.bmp", bmp);
  expect_error([&] { read_image(folder.path() / "old.bmp"); },
               {"old.bmp", "BMP files are not supported (convert the image to PNG)"});
  write_plain(folder.path() / "anim.gif", {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0});
  expect_error([&] { read_image(folder.path() / "anim.gif"); },
               {"anim.gif", "not a PNG or JPEG file"});
}

// --- write_png --------------------------------------------------------------------------------

TEST(WritePng, RoundTripsEveryChannelCount) {
  TemporaryFolder folder;
  at::manual_seed(7);
  for (int64_t channels = 1; channels <= 4; ++channels) {
    const at::Tensor image = at::randint(0, 256, {channels, 7, 5}, at::kByte);
    const fs::path path = folder.path() / fmt::format("c{}.png", channels);
    write_png(path, image);
    EXPECT_TRUE(read_image(path).equal(image)) << channels << " channels";
  }
  // A non-contiguous view is written as what it shows.
  const at::Tensor wide = at::randint(0, 256, {3, 6, 8}, at::kByte);
  write_png(folder.path() / "view.png", wide.slice(2, 1, 7, 2));
  EXPECT_TRUE(read_image(folder.path() / "view.png").equal(wide.slice(2, 1, 7, 2)));
}

TEST(WritePng, CreatesFoldersOverwritesAndLeavesNoTemporaryFiles) {
  TemporaryFolder folder;
  const fs::path path = folder.path() / "a" / "b" / "image.png";
  write_png(path, at::full({1, 2, 2}, 10, at::kByte));
  write_png(path, at::full({1, 3, 3}, 20, at::kByte));
  const at::Tensor read_back = read_image(path);
  EXPECT_TRUE(read_back.equal(at::full({1, 3, 3}, 20, at::kByte)));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path.parent_path()))
    names.push_back(entry.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"image.png"});
}

TEST(WritePng, RejectsBadInput) {
  TemporaryFolder folder;
  const fs::path path = folder.path() / "x.png";
  expect_error([&] { write_png(path, at::zeros({1, 2, 2}, at::kFloat)); }, {"uint8", "Float"});
  expect_error(
      [&] {
        write_png(path, at::zeros({2, 2}, at::kByte));
      },
      {"[C, H, W]", "2 dimensions"});
  expect_error(
      [&] {
        write_png(path, at::zeros({5, 2, 2}, at::kByte));
      },
      {"1 to 4 channels", "got 5"});
  expect_error([&] { write_png(path, at::zeros({1, 0, 2}, at::kByte)); }, {"0x2"});
  expect_error([&] { write_png(path, at::Tensor()); }, {"[C, H, W]"});
  EXPECT_FALSE(fs::exists(path));
}

// --- image grid -----------------------------------------------------------------------------

// The grid a reader expects, pixel by pixel, from the documented layout.
at::Tensor expected_grid(const at::Tensor& tiles, int64_t columns, int64_t padding, int64_t upscale,
                         uint8_t pad_value) {
  const int64_t count = tiles.size(0), channels = tiles.size(1);
  const int64_t tile_h = tiles.size(2) * upscale, tile_w = tiles.size(3) * upscale;
  const int64_t rows = (count + columns - 1) / columns;
  const int64_t height = rows * (tile_h + padding) + padding;
  const int64_t width = columns * (tile_w + padding) + padding;
  at::Tensor out = at::empty({channels, height, width}, at::kByte);
  auto in = tiles.accessor<uint8_t, 4>();
  auto o = out.accessor<uint8_t, 3>();
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        const int64_t row = (y - padding) / (tile_h + padding),
                      in_y = (y - padding) % (tile_h + padding);
        const int64_t col = (x - padding) / (tile_w + padding),
                      in_x = (x - padding) % (tile_w + padding);
        const int64_t index = row * columns + col;
        const bool in_tile =
            y >= padding && x >= padding && in_y < tile_h && in_x < tile_w && index < count;
        o[c][y][x] = in_tile ? in[index][c][in_y / upscale][in_x / upscale] : pad_value;
      }
  return out;
}

TEST(ImageGrid, LayoutPaddingAndUpscalingArePixelExact) {
  TemporaryFolder folder;
  // 5 grey tiles of 3 x 4 with distinct pixels, 3 columns: the last row has an empty cell.
  const at::Tensor tiles =
      at::arange(5 * 12, at::kInt).remainder(200).add(1).to(at::kByte).view({5, 1, 3, 4});
  const ImageGridOptions options{.columns = 3, .padding = 2, .pad_value = 230, .upscale = 2};
  const at::Tensor grid = make_image_grid(tiles, options);
  ASSERT_EQ(grid.sizes(), (at::IntArrayRef{1, 2 * (6 + 2) + 2, 3 * (8 + 2) + 2}));
  EXPECT_TRUE(grid.equal(expected_grid(tiles, 3, 2, 2, 230)));

  // Spot checks straight from the formula, so a wrong expected_grid cannot hide a bug.
  EXPECT_EQ(grid[0][0][0].item<int>(), 230);                              // corner padding
  EXPECT_EQ(grid[0][2][2].item<int>(), tiles[0][0][0][0].item<int>());    // tile 0 origin
  EXPECT_EQ(grid[0][3][3].item<int>(), tiles[0][0][0][0].item<int>());    // same pixel, 2x2 block
  EXPECT_EQ(grid[0][4][2].item<int>(), tiles[0][0][1][0].item<int>());    // next source row
  EXPECT_EQ(grid[0][2][10].item<int>(), 230);                             // gap between tiles
  EXPECT_EQ(grid[0][2][12].item<int>(), tiles[1][0][0][0].item<int>());   // tile 1 origin
  EXPECT_EQ(grid[0][10][12].item<int>(), tiles[4][0][0][0].item<int>());  // tile 4: row 1, col 1
  EXPECT_EQ(grid[0][10][22].item<int>(), 230);                            // empty last cell
  EXPECT_EQ(grid[0][15][19].item<int>(), tiles[4][0][2][3].item<int>());  // tile 4, last pixel
  EXPECT_EQ(grid[0][16][19].item<int>(), 230);                            // bottom padding

  const fs::path path = folder.path() / "grids" / "grid.png";
  write_image_grid(path, tiles, options);
  EXPECT_TRUE(read_image(path).equal(expected_grid(tiles, 3, 2, 2, 230)));
}

TEST(ImageGrid, RgbTilesAndFewerImagesThanColumns) {
  at::manual_seed(3);
  const at::Tensor tiles = at::randint(0, 256, {2, 3, 4, 3}, at::kByte);
  const at::Tensor grid = make_image_grid(tiles, {.columns = 8, .padding = 1, .pad_value = 9});
  // Two images never make a row of eight: the grid is as wide as the images it holds.
  ASSERT_EQ(grid.sizes(), (at::IntArrayRef{3, 4 + 2, 2 * (3 + 1) + 1}));
  EXPECT_TRUE(grid.equal(expected_grid(tiles, 2, 1, 1, 9)));
  // A single [C, H, W] image is a grid of one.
  EXPECT_TRUE(make_image_grid(tiles[1], {.padding = 0}).equal(tiles[1]));
}

TEST(ImageGrid, FloatValuesMapOntoTheGivenRange) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor values =
      at::tensor(std::vector<float>{-1.f, 0.f, 1.f, 0.5f, -3.f, 2.f, nan, -0.6f})
          .view({1, 1, 2, 4});
  const at::Tensor grid = make_image_grid(values, {.padding = 0});
  // (v + 1) / 2 * 255, rounded and clamped; NaN draws as the low end.
  const std::vector<int> expected = {0, 128, 255, 191, 0, 255, 0, 51};
  ASSERT_EQ(grid.sizes(), (at::IntArrayRef{1, 2, 4}));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(grid.flatten()[i].item<int>(), expected[i]) << i;

  const at::Tensor unit = at::tensor(std::vector<double>{0.0, 0.2, 1.0}).view({1, 1, 1, 3});
  const at::Tensor unit_grid = make_image_grid(unit, {.padding = 0, .low = 0.0, .high = 1.0});
  EXPECT_EQ(unit_grid.flatten()[0].item<int>(), 0);
  EXPECT_EQ(unit_grid.flatten()[1].item<int>(), 51);
  EXPECT_EQ(unit_grid.flatten()[2].item<int>(), 255);
}

TEST(ImageGrid, RejectsBadInput) {
  const at::Tensor grey = at::zeros({2, 1, 3, 3}, at::kByte);
  expect_error(
      [&] {
        make_image_grid(at::zeros({2, 2, 3, 3}, at::kByte));
      },
      {"1 (grey) or 3", "got 2"});
  expect_error(
      [&] {
        make_image_grid(at::zeros({0, 1, 3, 3}, at::kByte));
      },
      {"at least one image"});
  expect_error([&] { make_image_grid(at::zeros({3, 3}, at::kByte)); }, {"2 dimensions"});
  expect_error([&] { make_image_grid(grey.to(at::kInt)); }, {"uint8 or floating-point", "Int"});
  expect_error([&] { make_image_grid(grey, {.columns = 0}); }, {"columns", "got 0"});
  expect_error([&] { make_image_grid(grey, {.padding = -1}); }, {"padding", "got -1"});
  expect_error([&] { make_image_grid(grey, {.upscale = 0}); }, {"upscale", "got 0"});
  expect_error([&] { make_image_grid(grey.to(at::kFloat), {.low = 1.0, .high = 1.0}); },
               {"value range", "low < high"});
  expect_error([&] { make_image_grid(grey, {.upscale = 100000}); }, {"more than 65536 per side"});
}

}  // namespace
}  // namespace tessera
