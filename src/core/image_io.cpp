#include "tessera/core/image_io.h"

#include <ATen/ATen.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {
namespace {

// Output images past this side are a mistake (a wrong `columns`, a batch of thousands), not a
// picture anyone will look at; refusing them also keeps every size within stb's int range.
constexpr int64_t kMaxImageSide = int64_t{1} << 16;

void append_to_vector(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<unsigned char>*>(context);
  const auto* bytes = static_cast<const unsigned char*>(data);
  out->insert(out->end(), bytes, bytes + size);
}

// uint8 stays as it is; floating point maps [low, high] onto 0..255 (clamped, NaN -> low).
at::Tensor to_uint8_pixels(const at::Tensor& images, const ImageGridOptions& options) {
  if (images.scalar_type() == at::kByte) return images;
  TESSERA_CHECK(at::isFloatingType(images.scalar_type()),
                "image grid expects uint8 or floating-point images, got {}",
                c10::toString(images.scalar_type()));
  TESSERA_CHECK(
      std::isfinite(options.low) && std::isfinite(options.high) && options.low < options.high,
      "image grid value range [{}, {}] is invalid: expected finite low < high", options.low,
      options.high);
  const double scale = 255.0 / (options.high - options.low);
  return images.to(at::kFloat)
      .sub(options.low)
      .mul_(scale)
      .nan_to_num_(0.0, 255.0, 0.0)
      .clamp_(0.0, 255.0)
      .round_()
      .to(at::kByte);
}

// Note [Corrupt JPEG Huffman tables]
// Debian 12's stb_image (v2.27) builds each JPEG Huffman table into a 257-entry array without
// checking that the table's 16 code counts sum to at most 256 (the JPEG standard's limit), so a
// corrupt DHT segment writes past the array (found by fuzz/fuzz_image). Tessera cannot patch the
// system header; it walks the file's marker segments first and refuses such a table itself.
// Segments are skipped by their lengths, and entropy-coded data byte by byte up to the next marker
// (inside it 0xFF is always followed by 0x00 or a restart marker), so bytes inside other segments
// are never read as a DHT. Returns an empty string, or what is wrong.
std::string corrupt_jpeg_huffman_table(const std::vector<unsigned char>& b) {
  // From the first byte: stb skips 0xFF fill bytes before SOI too (0xFF 0xFF 0xD8 is a JPEG to it).
  size_t i = 0;
  while (i + 4 <= b.size()) {
    if (b[i] != 0xFF) {
      ++i;  // entropy-coded data
      continue;
    }
    const unsigned char marker = b[i + 1];
    if (marker == 0xFF) {
      ++i;  // fill byte
      continue;
    }
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) {
      i += 2;  // stuffed 0xFF, TEM, restart markers, SOI: no length
      continue;
    }
    if (marker == 0xD9) break;  // EOI
    const size_t length = (size_t{b[i + 2]} << 8) | b[i + 3];
    const size_t end = i + 2 + length;
    if (marker == 0xC4) {
      // stb reads a segment cut short by the file's end as zeros, and so does this check.
      const auto byte = [&](size_t q) -> size_t { return q < b.size() ? b[q] : 0; };
      for (size_t p = i + 4; p < end && p < b.size();) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += byte(p + k);
        if (codes > 256) {
          return fmt::format("a Huffman table declares {} codes (at most 256)", codes);
        }
        p += 17 + codes;
      }
    }
    if (length < 2 || end > b.size()) break;  // truncated: stb's own checks report it
    i = end;
  }
  return {};
}

// Decoded images past this many pixels are refused before decoding (67 M: 8192 x 8192), so that
// a small file's header cannot ask for gigabytes.
constexpr int64_t kMaxDecodedPixels = int64_t{1} << 26;

}  // namespace

at::Tensor read_image(const std::filesystem::path& path, int channels) {
  TESSERA_CHECK(channels >= 0 && channels <= 4,
                "read_image channels must be 0 (as stored) or 1..4, got {}", channels);
  std::error_code error;
  TESSERA_CHECK(std::filesystem::is_regular_file(path, error), "image file '{}' does not exist",
                path.string());
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "cannot open image file '{}'", path.string());
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                         std::istreambuf_iterator<char>());
  TESSERA_CHECK(bytes.size() <= static_cast<size_t>(INT32_MAX),
                "image file '{}' is larger than 2 GiB", path.string());
  // What stb's JPEG test accepts starts so; BMP files start with "BM".
  const bool jpeg = !bytes.empty() && bytes[0] == 0xFF;
  const bool bmp = bytes.size() >= 2 && bytes[0] == 'B' && bytes[1] == 'M';
  if (jpeg) {
    const std::string corrupt = corrupt_jpeg_huffman_table(bytes);
    TESSERA_CHECK(corrupt.empty(), "cannot decode image '{}': corrupt JPEG: {}", path.string(),
                  corrupt);
  }
  const auto size = static_cast<int>(bytes.size());
  int width = 0, height = 0, channels_in_file = 0;
  // The header is read first and must parse: the size checks below need it (stb's loader went on
  // decoding a BMP whose header its own info call refused).
  TESSERA_CHECK(stbi_info_from_memory(bytes.data(), size, &width, &height, &channels_in_file) != 0,
                "cannot decode image '{}': {}", path.string(),
                stbi_failure_reason() ? stbi_failure_reason() : "unknown reason");
  {
    const int64_t pixels = static_cast<int64_t>(width) * height;
    TESSERA_CHECK(pixels <= kMaxDecodedPixels,
                  "image '{}' is {}x{} pixels, more than the {} this loader decodes",
                  path.string(), width, height, kMaxDecodedPixels);
    // stb decodes a BMP or JPEG whose data is missing as zeros, pixel by pixel, to the size its
    // header declares (fuzz/fuzz_image timed out on a 123-byte BMP): a header declaring more
    // pixels than the file can hold is refused first. An uncompressed BMP holds at least one bit
    // per pixel; a JPEG, at least one byte per 1024 pixels (a flat 8x8 block costs a few bits).
    const int64_t most = bmp    ? 8 * static_cast<int64_t>(bytes.size())
                         : jpeg ? 1024 * static_cast<int64_t>(bytes.size())
                                : kMaxDecodedPixels;
    TESSERA_CHECK(pixels <= most,
                  "cannot decode image '{}': its header declares {}x{} pixels, more than its {} "
                  "bytes can hold (the file is truncated or corrupt)",
                  path.string(), width, height, bytes.size());
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(bytes.data(), size, &width, &height, &channels_in_file, channels),
      stbi_image_free);
  TESSERA_CHECK(pixels != nullptr, "cannot decode image '{}': {}", path.string(),
                stbi_failure_reason() ? stbi_failure_reason() : "unknown reason");
  const int64_t out_channels = channels ? channels : channels_in_file;
  // stb hands back interleaved rows (H, W, C); the library's convention is channels first.
  // clone, not contiguous(): for one channel the permuted view already counts as contiguous,
  // and contiguous() would return a view of the buffer freed on return.
  return at::from_blob(pixels.get(), {height, width, out_channels}, at::kByte)
      .permute({2, 0, 1})
      .clone(at::MemoryFormat::Contiguous);
}

void write_png(const std::filesystem::path& path, const at::Tensor& image) {
  TESSERA_CHECK(image.defined() && image.dim() == 3,
                "write_png expects an image [C, H, W], got {} dimensions",
                image.defined() ? image.dim() : 0);
  TESSERA_CHECK(image.scalar_type() == at::kByte, "write_png expects uint8 pixels, got {}",
                c10::toString(image.scalar_type()));
  const int64_t channels = image.size(0), height = image.size(1), width = image.size(2);
  TESSERA_CHECK(channels >= 1 && channels <= 4, "write_png expects 1 to 4 channels, got {}",
                channels);
  TESSERA_CHECK(height >= 1 && width >= 1 && height <= kMaxImageSide && width <= kMaxImageSide,
                "write_png image size {}x{} is outside 1..{} pixels per side", height, width,
                kMaxImageSide);
  const at::Tensor interleaved = image.to(at::kCPU).permute({1, 2, 0}).contiguous();
  std::vector<unsigned char> encoded;
  const int ok =
      stbi_write_png_to_func(append_to_vector, &encoded, static_cast<int>(width),
                             static_cast<int>(height), static_cast<int>(channels),
                             interleaved.data_ptr<uint8_t>(), static_cast<int>(width * channels));
  TESSERA_CHECK(ok != 0 && !encoded.empty(), "cannot encode '{}' as PNG", path.string());
  // See Note [Atomic writes]: a reader (a viewer refreshing, a later run) never sees half a PNG.
  write_file_atomically(
      path, std::string_view(reinterpret_cast<const char*>(encoded.data()), encoded.size()));
}

at::Tensor make_image_grid(const at::Tensor& images, const ImageGridOptions& options) {
  TESSERA_CHECK(images.defined() && (images.dim() == 3 || images.dim() == 4),
                "image grid expects images [N, C, H, W] or one image [C, H, W], got {} dimensions",
                images.defined() ? images.dim() : 0);
  at::Tensor batch = images.dim() == 3 ? images.unsqueeze(0) : images;
  const int64_t count = batch.size(0), channels = batch.size(1);
  const int64_t height = batch.size(2), width = batch.size(3);
  TESSERA_CHECK(count >= 1, "image grid needs at least one image, got none");
  TESSERA_CHECK(channels == 1 || channels == 3,
                "image grid expects 1 (grey) or 3 (RGB) channels, got {}", channels);
  TESSERA_CHECK(height >= 1 && width >= 1, "image grid got empty images of size {}x{}", height,
                width);
  TESSERA_CHECK(options.columns >= 1, "image grid columns must be >= 1, got {}", options.columns);
  TESSERA_CHECK(options.padding >= 0, "image grid padding must be >= 0, got {}", options.padding);
  TESSERA_CHECK(options.upscale >= 1, "image grid upscale must be >= 1, got {}", options.upscale);

  const int64_t columns = std::min(options.columns, count);
  const int64_t rows = (count + columns - 1) / columns;
  // Sizes are checked in floating point first so that absurd options cannot overflow int64.
  const double tile_height = static_cast<double>(height) * static_cast<double>(options.upscale);
  const double tile_width = static_cast<double>(width) * static_cast<double>(options.upscale);
  const double pad = static_cast<double>(options.padding);
  const double out_height = static_cast<double>(rows) * (tile_height + pad) + pad;
  const double out_width = static_cast<double>(columns) * (tile_width + pad) + pad;
  TESSERA_CHECK(out_height <= static_cast<double>(kMaxImageSide) &&
                    out_width <= static_cast<double>(kMaxImageSide),
                "image grid of {} x {} tiles of {}x{} (upscale {}, padding {}) would be {}x{} "
                "pixels, more than {} per side",
                rows, columns, height, width, options.upscale, options.padding, out_height,
                out_width, kMaxImageSide);

  at::Tensor tiles = to_uint8_pixels(batch.to(at::kCPU), options);
  const int64_t scale = options.upscale;
  if (scale > 1) {
    // Nearest-neighbour enlargement: each pixel becomes a scale x scale block.
    tiles = tiles.view({count, channels, height, 1, width, 1})
                .expand({count, channels, height, scale, width, scale})
                .reshape({count, channels, height * scale, width * scale});
  }
  const int64_t tile_h = height * scale, tile_w = width * scale, padding = options.padding;
  at::Tensor canvas = at::full(
      {channels, rows * (tile_h + padding) + padding, columns * (tile_w + padding) + padding},
      options.pad_value, at::kByte);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t top = padding + (i / columns) * (tile_h + padding);
    const int64_t left = padding + (i % columns) * (tile_w + padding);
    canvas.narrow(1, top, tile_h).narrow(2, left, tile_w).copy_(tiles[i]);
  }
  return canvas;
}

void write_image_grid(const std::filesystem::path& path, const at::Tensor& images,
                      const ImageGridOptions& options) {
  write_png(path, make_image_grid(images, options));
}

}  // namespace tessera
