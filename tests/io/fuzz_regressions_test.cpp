// Every input a fuzz target once crashed on (fuzz/regressions/<target>/, kept by `make fuzz`; see
// docs/fuzzing.md) must now end in a clear tessera::Error from the same reader, in the ordinary
// build too: a reader that crashes, hangs or throws anything else fails here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "common/source_paths.h"
#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/io/image_io.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/backbone_config.h"

namespace tessera {
namespace {

const std::map<std::string, std::function<void(const std::filesystem::path&)>>& readers() {
  static const std::map<std::string, std::function<void(const std::filesystem::path&)>> r = {
      {"safetensors", [](const auto& p) { (void)SafetensorsFile::open(p).all(); }},
      {"config", [](const auto& p) { (void)load_config<BackboneConfig>(p).parameter_count(); }},
      {"idx", [](const auto& p) { (void)read_idx_images(p); }},
      {"image", [](const auto& p) { (void)read_image(p); }}};
  return r;
}

TEST(FuzzRegressions, EveryKeptReproducerIsAClearError) {
  const std::filesystem::path root = tessera::testing::source_dir() / "fuzz" / "regressions";
  int files = 0;
  for (const auto& [target, read] : readers()) {
    const auto dir = root / target;
    if (!std::filesystem::is_directory(dir)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      ++files;
      try {
        read(entry.path());
        ADD_FAILURE() << entry.path() << ": accepted, but it is not a valid " << target << " file";
      } catch (const Error& e) {
        EXPECT_FALSE(std::string(e.what()).empty()) << entry.path();
      } catch (const std::exception& e) {
        ADD_FAILURE() << entry.path() << ": " << target << " reader threw something other than "
                      << "tessera::Error: " << e.what();
      }
    }
  }
  EXPECT_GE(files, 1) << "no reproducers under " << root;
}

}  // namespace
}  // namespace tessera
