#include "tessera/data/image_folder.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/io/image_io.h"
#include "tessera/core/logging.h"

namespace tessera {
namespace {

bool is_hidden(const std::filesystem::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

bool has_image_extension(const std::filesystem::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension == ".png" || extension == ".jpg" || extension == ".jpeg" || extension == ".bmp";
}

// The entries of `folder` that pass `keep`, sorted by name so that label ids and example order
// do not depend on the file system's directory order.
template <typename Keep>
std::vector<std::filesystem::path> sorted_entries(const std::filesystem::path& folder, Keep keep) {
  std::error_code error;
  std::filesystem::directory_iterator it(folder, error);
  TESSERA_CHECK(!error, "cannot list folder '{}': {}", folder.string(), error.message());
  std::vector<std::filesystem::path> entries;
  for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
    TESSERA_CHECK(!error, "cannot list folder '{}': {}", folder.string(), error.message());
    if (!is_hidden(it->path()) && keep(*it)) entries.push_back(it->path());
  }
  TESSERA_CHECK(!error, "cannot list folder '{}': {}", folder.string(), error.message());
  std::sort(entries.begin(), entries.end());
  return entries;
}

}  // namespace

LabeledImages load_image_folder(const std::filesystem::path& root,
                                const ImageFolderOptions& options) {
  TESSERA_CHECK(options.channels == 1 || options.channels == 3,
                "image folder channels must be 1 (grey) or 3 (RGB), got {}", options.channels);
  std::error_code error;
  TESSERA_CHECK(std::filesystem::is_directory(root, error),
                "image folder '{}' does not exist or is not a folder", root.string());

  const auto class_folders =
      sorted_entries(root, [](const std::filesystem::directory_entry& entry) {
        std::error_code ignored;
        return entry.is_directory(ignored);
      });
  TESSERA_CHECK(!class_folders.empty(),
                "image folder '{}' has no class sub-folders: expected root/<class name>/<image "
                "files>",
                root.string());

  // List everything first: the tensor is allocated once, at its final size.
  LabeledImages result;
  std::vector<std::filesystem::path> files;
  std::vector<int64_t> labels;
  for (const auto& folder : class_folders) {
    const auto images = sorted_entries(folder, [](const std::filesystem::directory_entry& entry) {
      std::error_code ignored;
      return entry.is_regular_file(ignored) && has_image_extension(entry.path());
    });
    TESSERA_CHECK(!images.empty(),
                  "class folder '{}' holds no images (.png, .jpg or .jpeg); every class "
                  "needs at least one",
                  folder.string());
    const auto label = static_cast<int64_t>(result.class_names.size());
    result.class_names.push_back(folder.filename().string());
    for (const auto& file : images) {
      files.push_back(file);
      labels.push_back(label);
    }
  }

  const at::Tensor first = read_image(files[0], options.channels);
  const int64_t height = first.size(1), width = first.size(2);
  at::Tensor images =
      at::empty({static_cast<int64_t>(files.size()), options.channels, height, width}, at::kByte);
  images[0].copy_(first);
  for (size_t i = 1; i < files.size(); ++i) {
    const at::Tensor image = read_image(files[i], options.channels);
    TESSERA_CHECK(image.size(1) == height && image.size(2) == width,
                  "image '{}' is {}x{} (height x width) but '{}' is {}x{}: all images in an "
                  "image folder must have the same size",
                  files[i].string(), image.size(1), image.size(2), files[0].string(), height,
                  width);
    images[static_cast<int64_t>(i)].copy_(image);
  }

  result.images = convert_pixels(images, options.pixels);
  result.labels = at::tensor(labels, at::kLong);
  TESSERA_LOG_DEBUG("loaded {} images of {} classes from {}", files.size(),
                    result.class_names.size(), root.string());
  return result;
}

}  // namespace tessera
