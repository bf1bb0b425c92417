#pragma once
// Fashion-MNIST from its IDX files (gzip-compressed, read through zlib).
//
// The files are those of Debian's `dataset-fashion-mnist` package:
//   train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60000 examples)
//   t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10000 examples)
// The folder is, in order of precedence: the `directory` option, the environment variable
// TESSERA_FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist.

#include <ATen/core/Tensor.h>

#include <array>
#include <filesystem>
#include <string_view>

#include "tessera/data/labeled_images.h"

namespace tessera {
/// Which Fashion-MNIST split to load.
enum class DatasetSplit { train, test };

// Every member has an initializer, so `{.pixels = ...}` compiles cleanly under
// -Wmissing-field-initializers.
struct FashionMnistOptions {
  std::filesystem::path directory{};  ///< empty: TESSERA_FASHION_MNIST_DIR, then the Debian folder
  PixelRange pixels = PixelRange::uint8;  ///< pixel format of the images
};  ///< Where load_fashion_mnist reads and the pixel format it returns.

inline constexpr int64_t kFashionMnistClasses = 10;  ///< Fashion-MNIST's classes.
inline constexpr std::string_view kFashionMnistDefaultDirectory =
    "/usr/share/datasets/fashion-mnist";  ///< Where Debian's dataset-fashion-mnist installs it.

/// Class names in label order: "T-shirt/top", "Trouser", ..., "Ankle boot".
const std::array<std::string_view, kFashionMnistClasses>& fashion_mnist_class_names();

/// The folder the loader reads when FashionMnistOptions::directory is empty.
std::filesystem::path default_fashion_mnist_directory();

/// Loads one split: images [N,1,28,28] (uint8 or float, see `pixels`), labels int64 [N].
/// Throws tessera::Error naming the file for a missing file, a bad header, truncated or
/// trailing data, corrupt gzip data, mismatched image and label counts, or a label >= 10.
LabeledImages load_fashion_mnist(DatasetSplit split, const FashionMnistOptions& options = {});

/// The IDX readers underneath, for any IDX file of unsigned bytes (plain or gzip-compressed).
/// read_idx_images: magic 0x00000803, returns uint8 [N, 1, rows, cols].
/// read_idx_labels: magic 0x00000801, returns uint8 [N] as stored.
at::Tensor read_idx_images(const std::filesystem::path& path);
at::Tensor read_idx_labels(const std::filesystem::path& path);  ///< See read_idx_images().

}  // namespace tessera
