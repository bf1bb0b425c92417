#pragma once
// A labeled image set held in memory: what the dataset loaders return, and the pixel
// conventions they offer.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

/// How pixels are delivered. Loaders read uint8 and convert once, on request.
enum class PixelRange {
  uint8,             ///< uint8 in 0..255, as stored
  zero_to_one,       ///< float32, v / 255
  minus_one_to_one,  ///< float32, v / 127.5 - 1 (what generative models usually train on)
};

struct LabeledImages {
  at::Tensor images{};  ///< [N, C, H, W]: uint8, or float32 for the float pixel ranges
  at::Tensor labels{};  ///< int64 [N], each in [0, class_names.size())
  std::vector<std::string> class_names{};  ///< label id -> name

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }  ///< Number of images (N).
};  ///< Images with class labels, as the data set loaders return them.

/// Converts a uint8 image tensor to `range`; returns it unchanged for PixelRange::uint8.
/// Throws tessera::Error when `images` is not uint8.
at::Tensor convert_pixels(const at::Tensor& images, PixelRange range);

}  // namespace tessera
