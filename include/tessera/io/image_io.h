#pragma once
// Reading single images, and writing PNG files and image grids (for samples, reconstructions
// and dataset previews).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

namespace tessera {

/// Decodes a PNG (libpng) or JPEG (libjpeg-turbo) file into uint8 [C, H, W]. `channels` 0 keeps
/// the file's own channel count (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); 1..4 converts to that
/// count (grey from colour as (77 R + 150 G + 29 B) >> 8; a missing alpha is 255).
/// Throws tessera::Error naming the file and the decoder's reason when it cannot be read; BMP and
/// other formats are refused. Safe on untrusted files (docs/fuzzing.md): images of more than
/// 67 M pixels (8192 x 8192) are refused from their header, and missing data is an error.
at::Tensor read_image(const std::filesystem::path& path, int channels = 0);

/// read_image on bytes already in memory (an archive member, a network message); the format is
/// told from the first bytes. `name` is what error messages call the image.
at::Tensor decode_image(std::span<const uint8_t> bytes, int channels = 0,
                        std::string_view name = "image");

/// Writes uint8 [C, H, W] (C in 1..4) as a PNG. The file is written under a temporary name,
/// flushed to disk and renamed, so readers never see a half-written file; missing parent
/// folders are created.
void write_png(const std::filesystem::path& path, const at::Tensor& image);

struct ImageGridOptions {
  int64_t columns = 8;    ///< tiles per row (at most N); rows = ceil(N / columns)
  int64_t padding = 2;    ///< pixels of pad around and between tiles, in output pixels
  uint8_t pad_value = 0;  ///< pad (and empty last-row cells) colour, the same in every channel
  int64_t upscale = 1;    ///< integer nearest-neighbour enlargement of each tile
  double low = -1.0;      ///< for floating-point input: the value drawn black ...
  double high = 1.0;      ///< ... and the value drawn white; outside values are clamped
};  ///< Layout of an image grid (write_image_grid).

/// Lays out images [N, C, H, W] (or one [C, H, W]), C 1 or 3, uint8 or floating point, in a
/// grid: tile i goes to row i / columns, column i % columns, at
/// (padding + row * (H * upscale + padding), padding + column * (W * upscale + padding)).
/// Returns uint8 [C, rows * (H * upscale + padding) + padding,
///                   columns * (W * upscale + padding) + padding]. NaN is drawn as `low`.
at::Tensor make_image_grid(const at::Tensor& images, const ImageGridOptions& options = {});

/// make_image_grid, then write_png.
void write_image_grid(const std::filesystem::path& path, const at::Tensor& images,
                      const ImageGridOptions& options = {});

}  // namespace tessera
