#include "tessera/core/image_io.h"

#include <ATen/ATen.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "core/image_codecs/image_decoders.h"
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

// Note [Own image decoders]
// Tessera first decoded images with Debian 12's stb_image (v2.27), which fuzz/fuzz_image
// showed unsafe on corrupt files: out-of-bounds writes and reads in its JPEG Huffman code, a
// null-pointer memcpy in its PNG path, a BMP header its info call and its loader read differently.
// Later stb releases fix some of these, but Debian 12 has no later stb and Tessera promises that
// other people's files never crash it, so it decodes with its own code
// (src/core/image_codecs/): every byte read through a bounds check, the declared size checked
// against DecodeLimits before allocating, and missing data an error rather than zeros decoded to
// the size a header claims. stb_image stays the tests' reference on valid files
// (tests/common/stb_reference.h); the library still writes PNGs with stb_image_write, on pixels it
// made itself.

// The decoder's message without its " [file:line]" suffix: the caller's error adds its own.
std::string without_location(const std::string& message) {
  const size_t open = message.rfind(" [");
  if (open != std::string::npos && !message.empty() && message.back() == ']') {
    return message.substr(0, open);
  }
  return message;
}

// stb_image's conversion rules, which read_image has always followed: grey from colour as
// (77 R + 150 G + 29 B) >> 8, a missing alpha 255, a dropped alpha simply dropped.
std::vector<uint8_t> convert_channels(const image_codecs::DecodedImage& image, int to) {
  const int from = image.channels;
  const size_t pixels = static_cast<size_t>(image.width * image.height);
  std::vector<uint8_t> out(pixels * static_cast<size_t>(to));
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* p = image.pixels.data() + i * static_cast<size_t>(from);
    uint8_t* q = out.data() + i * static_cast<size_t>(to);
    const bool colour = from >= 3;
    const uint8_t grey =
        colour ? static_cast<uint8_t>((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8) : p[0];
    const uint8_t alpha = from == 2 ? p[1] : from == 4 ? p[3] : 255;
    if (to <= 2) {
      q[0] = grey;
    } else {
      q[0] = colour ? p[0] : grey;
      q[1] = colour ? p[1] : grey;
      q[2] = colour ? p[2] : grey;
    }
    if (to == 2) q[1] = alpha;
    if (to == 4) q[3] = alpha;
  }
  return out;
}

}  // namespace

at::Tensor decode_image(std::span<const uint8_t> bytes, int channels, std::string_view name) {
  TESSERA_CHECK(channels >= 0 && channels <= 4,
                "image channels must be 0 (as stored) or 1..4, got {}", channels);
  const auto starts_with = [&](std::initializer_list<uint8_t> prefix) {
    return bytes.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), bytes.begin());
  };
  image_codecs::DecodedImage image;
  try {
    if (starts_with({0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'})) {
      image = image_codecs::decode_png(bytes);
    } else if (starts_with({0xFF, 0xD8})) {
      image = image_codecs::decode_jpeg(bytes);
    } else if (starts_with({'B', 'M'})) {
      image = image_codecs::decode_bmp(bytes);
    } else {
      TESSERA_FAIL("not a PNG, JPEG or BMP file (its first bytes match none of their signatures)");
    }
  } catch (const Error& e) {
    TESSERA_FAIL("cannot decode image '{}': {}", name, without_location(e.what()));
  }
  const int out_channels = channels ? channels : image.channels;
  const std::vector<uint8_t> pixels =
      out_channels == image.channels ? std::move(image.pixels) : convert_channels(image, out_channels);
  // The decoders hand back interleaved rows (H, W, C); the library's convention is channels first.
  return at::from_blob(const_cast<uint8_t*>(pixels.data()), {image.height, image.width, out_channels},
                       at::kByte)
      .permute({2, 0, 1})
      .clone(at::MemoryFormat::Contiguous);
}

at::Tensor read_image(const std::filesystem::path& path, int channels) {
  std::error_code error;
  TESSERA_CHECK(std::filesystem::is_regular_file(path, error), "image file '{}' does not exist",
                path.string());
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "cannot open image file '{}'", path.string());
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                         std::istreambuf_iterator<char>());
  TESSERA_CHECK(bytes.size() <= static_cast<size_t>(INT32_MAX),
                "image file '{}' is larger than 2 GiB", path.string());
  return decode_image(bytes, channels, path.string());
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
