#include "tessera/core/image_io.h"

#include <ATen/ATen.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"

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

}  // namespace

at::Tensor read_image(const std::filesystem::path& path, int channels) {
  TESSERA_CHECK(channels >= 0 && channels <= 4,
                "read_image channels must be 0 (as stored) or 1..4, got {}", channels);
  std::error_code error;
  TESSERA_CHECK(std::filesystem::is_regular_file(path, error), "image file '{}' does not exist",
                path.string());
  int width = 0, height = 0, channels_in_file = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load(path.c_str(), &width, &height, &channels_in_file, channels), stbi_image_free);
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
