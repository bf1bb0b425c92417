#pragma once
// Users' own images laid out one sub-folder per class:
//
//   root/cat/0001.png  root/cat/0002.jpg  root/dog/a.jpeg ...
//
// Classes are the sub-folders sorted by name (byte order), so label 0 is the first name.
// Images inside a class are read in name order, so loading is deterministic. Files ending in
// .png, .jpg or .jpeg (any case) are images; a .bmp is an error (BMP is not read, and skipping it
// would silently shrink the dataset); other files and hidden entries are skipped.

#include <filesystem>

#include "tessera/data/labeled_images.h"

namespace tessera {

struct ImageFolderOptions {
  int channels = 3;  ///< 1 (grey) or 3 (RGB); images are converted to it on load
  PixelRange pixels = PixelRange::uint8;  ///< pixel format of the images
};  ///< How load_image_folder converts what it reads.

/// Loads every image under `root`; images [N, channels, H, W], labels int64 [N], class names.
/// All images must share one size: the first one that differs is named in the error. Throws
/// tessera::Error for a missing or empty root, a class folder without images, or a file that
/// cannot be decoded (named, with the decoder's reason).
LabeledImages load_image_folder(const std::filesystem::path& root,
                                const ImageFolderOptions& options = {});

}  // namespace tessera
