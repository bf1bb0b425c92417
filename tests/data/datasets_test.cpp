// Fashion-MNIST IDX loading (on small gzip files written here, see Note [Test gzip writer], and
// on the real dataset when it is installed) and the image-folder loader (on a temporary tree of
// PNGs).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/prerequisite.h"
#include "common/temporary_folder.h"
#include "tessera/core/error.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/data/image_folder.h"
#include "tessera/io/image_io.h"

namespace tessera {
namespace {

using tessera::testing::expect_error;

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

using tessera::testing::TemporaryFolder;

// Note [Test gzip writer]
// The test writes gzip files itself, independently of the zlib the loader reads with (and
// without linking zlib into the test): a gzip member (RFC 1952) around deflate "stored" blocks
// (RFC 1951 3.2.4), i.e. the data uncompressed, with a CRC-32 trailer.

// CRC-32 as gzip and PNG use it, bit by bit: slow and plainly right.
uint32_t crc32_of(const Bytes& data) {
  uint32_t crc = 0xffffffffu;
  for (uint8_t byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void append_little_endian(Bytes& out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

Bytes gzip_stored(const Bytes& data) {
  Bytes out = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};  // magic, deflate, no flags, no mtime
  size_t position = 0;
  do {
    const size_t length = std::min<size_t>(65535, data.size() - position);
    const bool last = position + length == data.size();
    out.push_back(last ? 1 : 0);  // BFINAL, BTYPE 00 (stored)
    append_little_endian(out, static_cast<uint32_t>(length | ((~length & 0xffff) << 16)));
    out.insert(out.end(), data.begin() + static_cast<std::ptrdiff_t>(position),
               data.begin() + static_cast<std::ptrdiff_t>(position + length));
    position += length;
  } while (position < data.size());
  append_little_endian(out, crc32_of(data));
  append_little_endian(out, static_cast<uint32_t>(data.size()));
  return out;
}

void write_plain(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// See Note [Test gzip writer].
void write_gzip(const fs::path& path, const Bytes& bytes) { write_plain(path, gzip_stored(bytes)); }

Bytes read_plain(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void append_big_endian(Bytes& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

// An IDX file as the format describes it: magic, big-endian dimension sizes, then data.
Bytes idx_file(uint32_t magic, std::initializer_list<uint32_t> dimensions, const Bytes& data) {
  Bytes out;
  append_big_endian(out, magic);
  for (uint32_t size : dimensions) append_big_endian(out, size);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// The fixture's images: 3 images of 4 x 5 whose pixels are a formula of their position.
constexpr uint32_t kCount = 3, kRows = 4, kCols = 5;
uint8_t fixture_pixel(uint32_t image, uint32_t row, uint32_t col) {
  return static_cast<uint8_t>((image * 97 + row * 13 + col * 7 + 1) % 256);
}
Bytes fixture_pixels(uint32_t count = kCount) {
  Bytes out;
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t r = 0; r < kRows; ++r)
      for (uint32_t c = 0; c < kCols; ++c) out.push_back(fixture_pixel(i, r, c));
  return out;
}
const Bytes kFixtureLabels = {2, 0, 9};

Bytes good_images() { return idx_file(0x803, {kCount, kRows, kCols}, fixture_pixels()); }
Bytes good_labels() { return idx_file(0x801, {kCount}, kFixtureLabels); }

// Writes the four Fashion-MNIST files, with `images` and `labels` for the train split.
void write_dataset(const fs::path& folder, const Bytes& images, const Bytes& labels) {
  write_gzip(folder / "train-images-idx3-ubyte.gz", images);
  write_gzip(folder / "train-labels-idx1-ubyte.gz", labels);
  write_gzip(folder / "t10k-images-idx3-ubyte.gz", good_images());
  write_gzip(folder / "t10k-labels-idx1-ubyte.gz", good_labels());
}

LabeledImages load_train(const fs::path& folder) {
  return load_fashion_mnist(DatasetSplit::train, {.directory = folder});
}

TEST(FashionMnistIdx, ReadsPixelsAndLabelsExactly) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), good_labels());
  const LabeledImages data = load_train(folder.path());

  ASSERT_EQ(data.images.scalar_type(), at::kByte);
  ASSERT_EQ(data.images.sizes(), (at::IntArrayRef{kCount, 1, kRows, kCols}));
  for (uint32_t i = 0; i < kCount; ++i)
    for (uint32_t r = 0; r < kRows; ++r)
      for (uint32_t c = 0; c < kCols; ++c)
        ASSERT_EQ(data.images[i][0][r][c].item<int>(), fixture_pixel(i, r, c)) << i << r << c;

  ASSERT_EQ(data.labels.scalar_type(), at::kLong);
  ASSERT_EQ(data.labels.sizes(), (at::IntArrayRef{kCount}));
  for (uint32_t i = 0; i < kCount; ++i)
    EXPECT_EQ(data.labels[i].item<int64_t>(), kFixtureLabels[i]);
  EXPECT_EQ(data.size(), kCount);

  ASSERT_EQ(data.class_names.size(), 10u);
  EXPECT_EQ(data.class_names[0], "T-shirt/top");
  EXPECT_EQ(data.class_names[1], "Trouser");
  EXPECT_EQ(data.class_names[5], "Sandal");
  EXPECT_EQ(data.class_names[9], "Ankle boot");
}

TEST(FashionMnistIdx, TestSplitReadsTheT10kFiles) {
  TemporaryFolder folder;
  // The train files have 2 images; the test split must not read them.
  write_dataset(folder.path(), idx_file(0x803, {2, kRows, kCols}, fixture_pixels(2)),
                idx_file(0x801, {2}, {1, 1}));
  const LabeledImages test = load_fashion_mnist(DatasetSplit::test, {.directory = folder.path()});
  EXPECT_EQ(test.size(), kCount);
  EXPECT_EQ(load_train(folder.path()).size(), 2);
}

TEST(FashionMnistIdx, FloatPixelRanges) {
  TemporaryFolder folder;
  const Bytes pixels = {0, 51, 255, 102};
  write_dataset(folder.path(), idx_file(0x803, {1, 2, 2}, pixels), idx_file(0x801, {1}, {3}));
  const auto zero_one = load_fashion_mnist(
      DatasetSplit::train, {.directory = folder.path(), .pixels = PixelRange::zero_to_one});
  const auto signed_unit = load_fashion_mnist(
      DatasetSplit::train, {.directory = folder.path(), .pixels = PixelRange::minus_one_to_one});
  ASSERT_EQ(zero_one.images.scalar_type(), at::kFloat);
  ASSERT_EQ(signed_unit.images.scalar_type(), at::kFloat);
  const double expected_zero_one[] = {0.0, 0.2, 1.0, 0.4};
  const double expected_signed[] = {-1.0, -0.6, 1.0, -0.2};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(zero_one.images.flatten()[i].item<double>(), expected_zero_one[i], 1e-6);
    EXPECT_NEAR(signed_unit.images.flatten()[i].item<double>(), expected_signed[i], 1e-6);
  }
}

TEST(FashionMnistIdx, UncompressedFilesAreReadToo) {
  TemporaryFolder folder;
  write_plain(folder.path() / "plain-images", good_images());
  const at::Tensor images = read_idx_images(folder.path() / "plain-images");
  ASSERT_EQ(images.sizes(), (at::IntArrayRef{kCount, 1, kRows, kCols}));
  EXPECT_EQ(images[2][0][3][4].item<int>(), fixture_pixel(2, 3, 4));
}

TEST(FashionMnistIdx, DirectoryComesFromTheEnvironment) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), good_labels());
  const char* previous = std::getenv("TESSERA_FASHION_MNIST_DIR");
  const std::optional<std::string> saved =
      previous ? std::optional<std::string>(previous) : std::nullopt;
  ::setenv("TESSERA_FASHION_MNIST_DIR", folder.path().c_str(), 1);
  EXPECT_EQ(default_fashion_mnist_directory(), folder.path());
  EXPECT_EQ(load_fashion_mnist(DatasetSplit::train).size(), kCount);
  if (saved) {
    ::setenv("TESSERA_FASHION_MNIST_DIR", saved->c_str(), 1);
  } else {
    ::unsetenv("TESSERA_FASHION_MNIST_DIR");
    EXPECT_EQ(default_fashion_mnist_directory(), fs::path("/usr/share/datasets/fashion-mnist"));
  }
}

TEST(FashionMnistIdx, MissingFolder) {
  TemporaryFolder folder;
  expect_error([&] { load_train(folder.path() / "nowhere"); },
               {"nowhere", "does not exist", "TESSERA_FASHION_MNIST_DIR"});
}

TEST(FashionMnistIdx, MissingFile) {
  TemporaryFolder folder;
  write_gzip(folder.path() / "train-images-idx3-ubyte.gz", good_images());
  expect_error([&] { load_train(folder.path()); },
               {"train-labels-idx1-ubyte.gz", "does not exist"});
}

TEST(FashionMnistIdx, FileIsAFolder) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), good_labels());
  fs::remove(folder.path() / "train-labels-idx1-ubyte.gz");
  fs::create_directory(folder.path() / "train-labels-idx1-ubyte.gz");
  expect_error([&] { load_train(folder.path()); }, {"train-labels-idx1-ubyte.gz", "directory"});
}

TEST(FashionMnistIdx, BadImageMagic) {
  TemporaryFolder folder;
  // A label file where the images belong: magic 0x801 instead of 0x803.
  write_dataset(folder.path(), good_labels(), good_labels());
  expect_error([&] { load_train(folder.path()); },
               {"train-images-idx3-ubyte.gz", "0x00000801", "expected 0x00000803"});
}

TEST(FashionMnistIdx, BadLabelMagic) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), idx_file(0x12345678, {kCount}, kFixtureLabels));
  expect_error([&] { load_train(folder.path()); },
               {"train-labels-idx1-ubyte.gz", "0x12345678", "expected 0x00000801"});
}

TEST(FashionMnistIdx, EmptyFile) {
  TemporaryFolder folder;
  write_dataset(folder.path(), Bytes{}, good_labels());
  expect_error([&] { load_train(folder.path()); }, {"train-images-idx3-ubyte.gz", "truncated"});
}

TEST(FashionMnistIdx, TruncatedHeader) {
  TemporaryFolder folder;
  Bytes header = idx_file(0x803, {kCount, kRows}, {});  // the column count is missing
  write_dataset(folder.path(), header, good_labels());
  expect_error([&] { load_train(folder.path()); },
               {"train-images-idx3-ubyte.gz", "truncated inside its header"});
}

TEST(FashionMnistIdx, TruncatedImageData) {
  TemporaryFolder folder;
  Bytes images = good_images();
  images.resize(images.size() - 7);
  write_dataset(folder.path(), images, good_labels());
  expect_error([&] { load_train(folder.path()); },
               {"train-images-idx3-ubyte.gz", "truncated", "declares 60 bytes", "holds 53"});
}

TEST(FashionMnistIdx, TruncatedLabelData) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), idx_file(0x801, {kCount}, {2, 0}));
  expect_error([&] { load_train(folder.path()); }, {"train-labels-idx1-ubyte.gz", "truncated"});
}

TEST(FashionMnistIdx, TrailingData) {
  TemporaryFolder folder;
  Bytes images = good_images();
  images.push_back(42);
  write_dataset(folder.path(), images, good_labels());
  expect_error([&] { load_train(folder.path()); },
               {"train-images-idx3-ubyte.gz", "more data than the 60 bytes"});
}

TEST(FashionMnistIdx, ImageAndLabelCountsDiffer) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), idx_file(0x801, {2}, {2, 0}));
  expect_error(
      [&] { load_train(folder.path()); },
      {"3 images", "2 labels", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"});
}

TEST(FashionMnistIdx, LabelOutOfRange) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), idx_file(0x801, {kCount}, {2, 10, 0}));
  expect_error([&] { load_train(folder.path()); },
               {"train-labels-idx1-ubyte.gz", "label 10 at index 1", "expected 0..9"});
}

TEST(FashionMnistIdx, ImpossibleDeclaredSize) {
  TemporaryFolder folder;
  write_dataset(folder.path(), idx_file(0x803, {0xffffffffu, 0xffffffffu, 0xffffffffu}, {}),
                good_labels());
  expect_error([&] { load_train(folder.path()); }, {"train-images-idx3-ubyte.gz", "corrupt"});
}

TEST(FashionMnistIdx, ZeroSizedImageSide) {
  TemporaryFolder folder;
  write_dataset(folder.path(), idx_file(0x803, {kCount, 0, kCols}, {}), good_labels());
  expect_error([&] { load_train(folder.path()); }, {"train-images-idx3-ubyte.gz", "size 0"});
}

TEST(FashionMnistIdx, TruncatedGzipStream) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), good_labels());
  const fs::path images = folder.path() / "train-images-idx3-ubyte.gz";
  Bytes compressed = read_plain(images);
  compressed.resize(compressed.size() / 2);
  write_plain(images, compressed);
  expect_error([&] { load_train(folder.path()); }, {"train-images-idx3-ubyte.gz"});
}

TEST(FashionMnistIdx, CorruptGzipStream) {
  TemporaryFolder folder;
  write_dataset(folder.path(), good_images(), good_labels());
  const fs::path images = folder.path() / "train-images-idx3-ubyte.gz";
  Bytes compressed = read_plain(images);
  // Past the 10-byte gzip header: block lengths, data and the CRC trailer.
  for (size_t i = 12; i < compressed.size(); i += 3) compressed[i] ^= 0x5a;
  write_plain(images, compressed);
  expect_error([&] { load_train(folder.path()); }, {"train-images-idx3-ubyte.gz"});
}

// The real dataset, when installed (Debian's dataset-fashion-mnist).
class FashionMnistReal : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(default_fashion_mnist_directory() / "train-images-idx3-ubyte.gz")) {
      TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << default_fashion_mnist_directory()
                                                   << " (set TESSERA_FASHION_MNIST_DIR)");
    }
  }
};

TEST_F(FashionMnistReal, CountsAndClassBalance) {
  const LabeledImages train = load_fashion_mnist(DatasetSplit::train);
  const LabeledImages test = load_fashion_mnist(DatasetSplit::test);
  ASSERT_EQ(train.images.sizes(), (at::IntArrayRef{60000, 1, 28, 28}));
  ASSERT_EQ(test.images.sizes(), (at::IntArrayRef{10000, 1, 28, 28}));
  ASSERT_EQ(train.size(), 60000);
  ASSERT_EQ(test.size(), 10000);
  const at::Tensor train_counts = at::bincount(train.labels, {}, 10);
  const at::Tensor test_counts = at::bincount(test.labels, {}, 10);
  ASSERT_EQ(train_counts.numel(), 10);
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(train_counts[c].item<int64_t>(), 6000) << "class " << c;
    EXPECT_EQ(test_counts[c].item<int64_t>(), 1000) << "class " << c;
  }
}

TEST_F(FashionMnistReal, TrainPixelMeanMatchesThePublishedValue) {
  const LabeledImages train = load_fashion_mnist(DatasetSplit::train);
  // The commonly quoted normalisation constant: mean 0.2860 of 1, i.e. 72.94 of 255.
  const double mean = train.images.to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(mean, 72.94, 0.5);
  const auto unit = load_fashion_mnist(DatasetSplit::train, {.pixels = PixelRange::zero_to_one});
  EXPECT_NEAR(unit.images.mean().item<double>(), 0.2860, 0.002);
}

// --- image folder --------------------------------------------------------------------------

// A grey image [1, h, w] whose pixels are `base` plus a position pattern.
at::Tensor grey_image(int64_t height, int64_t width, int base) {
  at::Tensor image = at::empty({1, height, width}, at::kByte);
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      image[0][y][x] = static_cast<uint8_t>((base + 11 * y + 3 * x) % 256);
  return image;
}

TEST(ImageFolder, LoadsClassesInNameOrder) {
  TemporaryFolder root;
  // Created out of order, with files and folders the loader must skip.
  write_png(root.path() / "shoes" / "b.png", grey_image(6, 5, 100));
  write_png(root.path() / "shoes" / "a.PNG", grey_image(6, 5, 50));
  write_png(root.path() / "bags" / "only.png", grey_image(6, 5, 10));
  write_plain(root.path() / "shoes" / "notes.txt", {1, 2, 3});
  write_plain(root.path() / "README", {1});
  write_png(root.path() / ".cache" / "x.png", grey_image(3, 3, 0));
  write_png(root.path() / "shoes" / ".hidden.png", grey_image(3, 3, 0));

  const LabeledImages data = load_image_folder(root.path(), {.channels = 1});
  ASSERT_EQ(data.class_names, (std::vector<std::string>{"bags", "shoes"}));
  ASSERT_EQ(data.images.sizes(), (at::IntArrayRef{3, 1, 6, 5}));
  ASSERT_EQ(data.images.scalar_type(), at::kByte);
  ASSERT_TRUE(data.labels.equal(at::tensor(std::vector<int64_t>{0, 1, 1}, at::kLong)));
  EXPECT_TRUE(data.images[0].equal(grey_image(6, 5, 10)));
  EXPECT_TRUE(data.images[1].equal(grey_image(6, 5, 50)));
  EXPECT_TRUE(data.images[2].equal(grey_image(6, 5, 100)));
}

TEST(ImageFolder, ConvertsChannels) {
  TemporaryFolder root;
  write_png(root.path() / "a" / "grey.png", grey_image(4, 4, 7));
  // An RGB image whose channels are equal converts to grey exactly (stb's weights sum to 1).
  write_png(root.path() / "b" / "rgb.png", grey_image(4, 4, 90).repeat({3, 1, 1}));

  const LabeledImages rgb = load_image_folder(root.path(), {.channels = 3});
  ASSERT_EQ(rgb.images.sizes(), (at::IntArrayRef{2, 3, 4, 4}));
  EXPECT_TRUE(rgb.images[0].equal(grey_image(4, 4, 7).repeat({3, 1, 1})));
  EXPECT_TRUE(rgb.images[1].equal(grey_image(4, 4, 90).repeat({3, 1, 1})));

  const LabeledImages grey = load_image_folder(root.path(), {.channels = 1});
  EXPECT_TRUE(grey.images[1].equal(grey_image(4, 4, 90)));

  const LabeledImages unit =
      load_image_folder(root.path(), {.channels = 1, .pixels = PixelRange::minus_one_to_one});
  ASSERT_EQ(unit.images.scalar_type(), at::kFloat);
  EXPECT_NEAR(unit.images[0][0][0][0].item<double>(), 7 / 127.5 - 1, 1e-6);
}

TEST(ImageFolder, DifferentSizesNameTheFile) {
  TemporaryFolder root;
  write_png(root.path() / "a" / "1.png", grey_image(4, 4, 0));
  write_png(root.path() / "b" / "1.png", grey_image(4, 4, 0));
  write_png(root.path() / "b" / "2.png", grey_image(4, 5, 0));
  expect_error([&] { load_image_folder(root.path()); }, {"b/2.png", "4x5", "same size", "a/1.png"});
}

TEST(ImageFolder, UnreadableFileIsNamed) {
  TemporaryFolder root;
  write_png(root.path() / "a" / "1.png", grey_image(4, 4, 0));
  write_plain(root.path() / "a" / "2.jpg", {'n', 'o', 't', ' ', 'a', ' ', 'j', 'p', 'e', 'g'});
  expect_error([&] { load_image_folder(root.path()); }, {"a/2.jpg", "cannot decode"});
}

TEST(ImageFolder, MissingOrEmptyRoot) {
  TemporaryFolder root;
  expect_error([&] { load_image_folder(root.path() / "absent"); }, {"absent", "does not exist"});
  expect_error([&] { load_image_folder(root.path()); }, {"no class sub-folders"});
  write_plain(root.path() / "loose.png", {0});
  expect_error([&] { load_image_folder(root.path()); }, {"no class sub-folders"});
}

TEST(ImageFolder, ClassWithoutImages) {
  TemporaryFolder root;
  write_png(root.path() / "a" / "1.png", grey_image(4, 4, 0));
  fs::create_directories(root.path() / "empty");
  write_plain(root.path() / "empty" / "notes.txt", {1});
  expect_error([&] { load_image_folder(root.path()); }, {"empty", "holds no images"});
}

TEST(ImageFolder, RejectsUnsupportedChannelCount) {
  TemporaryFolder root;
  write_png(root.path() / "a" / "1.png", grey_image(4, 4, 0));
  expect_error([&] { load_image_folder(root.path(), {.channels = 4}); }, {"channels", "got 4"});
}

}  // namespace
}  // namespace tessera
