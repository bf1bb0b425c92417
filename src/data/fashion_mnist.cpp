#include "tessera/data/fashion_mnist.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/logging.h"

namespace tessera {
namespace {

// Note [IDX files]
// An IDX file (LeCun's MNIST format, which Fashion-MNIST copies) is a 4-byte magic number, one
// big-endian uint32 per dimension, then the elements in row-major order. The magic is two zero
// bytes, a type byte (0x08: unsigned byte) and the number of dimensions, so images are
// 0x00000803 (count, rows, cols) and labels 0x00000801 (count). The header is untrusted input:
// the data size it declares is bounded before anything is allocated, and the file must hold
// exactly that many bytes, no fewer (truncated) and no more (the header lies).

constexpr uint32_t kIdxImagesMagic = 0x00000803;
constexpr uint32_t kIdxLabelsMagic = 0x00000801;
// No IDX file anyone uses comes near this; a header that claims more is corrupt, and refusing
// it keeps a bad file from asking for an absurd allocation.
constexpr uint64_t kMaxIdxDataBytes = uint64_t{1} << 34;  // 16 GiB
// The first piece read of an IDX payload; each later piece doubles what has been read.
constexpr uint64_t kFirstReadBytes = uint64_t{1} << 20;
// gzread takes an unsigned int length and returns an int, so large reads go in pieces.
constexpr uint64_t kReadChunkBytes = uint64_t{1} << 28;

uint32_t read_big_endian_u32(const unsigned char* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// A gzip (or, transparently, plain) file opened for reading, closed on scope exit.
class GzipReader {
 public:
  explicit GzipReader(const std::filesystem::path& path) : path_(path) {
    std::error_code error;
    TESSERA_CHECK(std::filesystem::exists(path, error), "IDX file '{}' does not exist",
                  path.string());
    TESSERA_CHECK(!std::filesystem::is_directory(path, error),
                  "IDX file '{}' is a directory, expected a file", path.string());
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    TESSERA_CHECK(file_ != nullptr, "cannot open IDX file '{}': {}", path.string(),
                  errno ? std::strerror(errno) : "out of memory");
    // A larger buffer than zlib's 8 KiB default makes reading 47 MB noticeably faster.
    gzbuffer(file_, 1 << 20);
  }
  ~GzipReader() {
    if (file_) gzclose_r(file_);
  }
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Reads up to `size` bytes; returns how many were read (fewer only at the end of the data).
  uint64_t read(void* destination, uint64_t size) {
    auto* bytes = static_cast<unsigned char*>(destination);
    uint64_t total = 0;
    while (total < size) {
      const auto chunk = static_cast<unsigned>(std::min(size - total, kReadChunkBytes));
      const int got = gzread(file_, bytes + total, chunk);
      TESSERA_CHECK(got >= 0, "cannot read IDX file '{}': {}", path_.string(), zlib_error());
      if (got == 0) break;
      total += static_cast<uint64_t>(got);
    }
    return total;
  }

  // zlib's description of the last error, or "" when there was none.
  std::string zlib_error() {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_OK || message == nullptr) return {};
    if (code == Z_ERRNO) return std::strerror(errno);
    // zlib prefixes the path, which our messages already name.
    std::string text = message;
    const std::string prefix = path_.string() + ": ";
    if (text.starts_with(prefix)) text.erase(0, prefix.size());
    return text;
  }

 private:
  std::filesystem::path path_;
  gzFile file_ = nullptr;
};

// Reads an IDX file of unsigned bytes with `expected_magic`; returns the elements as a flat
// uint8 tensor and the dimensions. See Note [IDX files].
at::Tensor read_idx(const std::filesystem::path& path, uint32_t expected_magic,
                    std::vector<int64_t>& dimensions) {
  const std::string name = path.string();
  GzipReader reader(path);

  unsigned char magic_bytes[4];
  const uint64_t magic_read = reader.read(magic_bytes, sizeof magic_bytes);
  TESSERA_CHECK(
      magic_read == sizeof magic_bytes,
      "IDX file '{}' is truncated: it holds {} bytes, fewer than the 4-byte magic number{}", name,
      magic_read, reader.zlib_error().empty() ? "" : " (" + reader.zlib_error() + ")");
  const uint32_t magic = read_big_endian_u32(magic_bytes);
  const unsigned expected_rank = expected_magic & 0xff;
  TESSERA_CHECK(magic == expected_magic,
                "IDX file '{}' has magic number 0x{:08x}, expected 0x{:08x} (unsigned bytes, {} "
                "dimension{}); is it the right file, and an IDX file at all?",
                name, magic, expected_magic, expected_rank, expected_rank == 1 ? "" : "s");

  std::vector<unsigned char> header(4 * expected_rank);
  const uint64_t header_read = reader.read(header.data(), header.size());
  TESSERA_CHECK(header_read == header.size(),
                "IDX file '{}' is truncated inside its header: {} dimension sizes need {} bytes "
                "after the magic number, the file holds {}",
                name, expected_rank, header.size(), header_read);

  dimensions.clear();
  uint64_t data_bytes = 1, element_bytes = 1;
  for (unsigned d = 0; d < expected_rank; ++d) {
    const uint32_t size = read_big_endian_u32(header.data() + 4 * d);
    // Image sides of zero make no sense; a count of zero is an empty but valid file.
    TESSERA_CHECK(d == 0 || size > 0, "IDX file '{}' declares dimension {} of size 0", name, d);
    dimensions.push_back(static_cast<int64_t>(size));
    // Checking before multiplying keeps the product from overflowing; the sizes of one element
    // (every dimension but the count) are bounded too, so that an empty file's shape stays
    // within a tensor's int64 strides.
    TESSERA_CHECK(size == 0 || data_bytes <= kMaxIdxDataBytes / size,
                  "IDX file '{}' declares more than {} bytes of data; its header is corrupt", name,
                  kMaxIdxDataBytes);
    data_bytes *= size;
    if (d > 0) element_bytes *= size;
    TESSERA_CHECK(element_bytes <= kMaxIdxDataBytes,
                  "IDX file '{}' declares elements of more than {} bytes; its header is corrupt",
                  name, kMaxIdxDataBytes);
  }

  // Read in pieces into storage that grows with what the file really holds: a header that
  // declares gigabytes on a file of a few bytes gets its "truncated" error without the allocation.
  std::vector<uint8_t> bytes;
  uint64_t data_read = 0;
  while (data_read < data_bytes) {
    const uint64_t want = std::min<uint64_t>(data_bytes - data_read,
                                             std::max<uint64_t>(data_read, kFirstReadBytes));
    bytes.resize(static_cast<size_t>(data_read + want));
    const uint64_t got = reader.read(bytes.data() + data_read, want);
    data_read += got;
    if (got < want) break;
  }
  bytes.resize(static_cast<size_t>(data_read));
  if (data_read != data_bytes) {
    const std::string zlib_error = reader.zlib_error();
    TESSERA_FAIL(
        "IDX file '{}' is truncated: its header declares {} bytes of data ({}), the file "
        "holds {}{}",
        name, data_bytes, fmt::join(dimensions, " x "), data_read,
        zlib_error.empty() ? "" : " (" + zlib_error + ")");
  }
  unsigned char extra = 0;
  TESSERA_CHECK(reader.read(&extra, 1) == 0,
                "IDX file '{}' holds more data than the {} bytes its header declares ({}); the "
                "header does not describe this file",
                name, data_bytes, fmt::join(dimensions, " x "));
  at::Tensor data = at::empty({static_cast<int64_t>(data_bytes)}, at::kByte);
  if (data_bytes > 0) std::memcpy(data.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return data;
}

std::filesystem::path resolve_directory(const FashionMnistOptions& options) {
  return options.directory.empty() ? default_fashion_mnist_directory() : options.directory;
}

}  // namespace

const std::array<std::string_view, kFashionMnistClasses>& fashion_mnist_class_names() {
  static constexpr std::array<std::string_view, kFashionMnistClasses> names = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

std::filesystem::path default_fashion_mnist_directory() {
  if (const char* env = std::getenv("TESSERA_FASHION_MNIST_DIR"); env && *env) return env;
  return std::filesystem::path(kFashionMnistDefaultDirectory);
}

at::Tensor read_idx_images(const std::filesystem::path& path) {
  std::vector<int64_t> dimensions;
  at::Tensor data = read_idx(path, kIdxImagesMagic, dimensions);
  return data.view({dimensions[0], 1, dimensions[1], dimensions[2]});
}

at::Tensor read_idx_labels(const std::filesystem::path& path) {
  std::vector<int64_t> dimensions;
  return read_idx(path, kIdxLabelsMagic, dimensions);
}

LabeledImages load_fashion_mnist(DatasetSplit split, const FashionMnistOptions& options) {
  const std::filesystem::path directory = resolve_directory(options);
  std::error_code error;
  TESSERA_CHECK(std::filesystem::is_directory(directory, error),
                "Fashion-MNIST folder '{}' does not exist: install Debian's dataset-fashion-mnist "
                "package (scripts/bootstrap does), set TESSERA_FASHION_MNIST_DIR, or pass the "
                "folder that holds train-images-idx3-ubyte.gz and its siblings",
                directory.string());

  const char* prefix = split == DatasetSplit::train ? "train" : "t10k";
  const auto images_path = directory / (std::string(prefix) + "-images-idx3-ubyte.gz");
  const auto labels_path = directory / (std::string(prefix) + "-labels-idx1-ubyte.gz");

  at::Tensor images = read_idx_images(images_path);
  at::Tensor labels = read_idx_labels(labels_path);
  TESSERA_CHECK(images.size(0) == labels.size(0),
                "Fashion-MNIST files disagree: '{}' holds {} images but '{}' holds {} labels",
                images_path.string(), images.size(0), labels_path.string(), labels.size(0));
  if (labels.numel() > 0) {
    const at::Tensor out_of_range = labels.ge(kFashionMnistClasses);
    if (out_of_range.any().item<bool>()) {
      const int64_t index = out_of_range.nonzero()[0][0].item<int64_t>();
      TESSERA_FAIL("Fashion-MNIST label file '{}' holds label {} at index {}: expected 0..{}",
                   labels_path.string(), labels[index].item<int>(), index,
                   kFashionMnistClasses - 1);
    }
  }

  LabeledImages result;
  result.images = convert_pixels(images, options.pixels);
  result.labels = labels.to(at::kLong);
  for (std::string_view name : fashion_mnist_class_names()) result.class_names.emplace_back(name);
  TESSERA_LOG_DEBUG("loaded Fashion-MNIST {} split: {} images from {}", prefix, result.size(),
                    directory.string());
  return result;
}

}  // namespace tessera
