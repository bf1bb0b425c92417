// The IDX readers (tessera/data/fashion_mnist.h) on arbitrary bytes, plain or gzip: the magic
// number, the dimensions and the payload's length are the file's word.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tessera/data/fashion_mnist.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = tessera::fuzz::write_input(data, size, ".idx");
  tessera::fuzz::expect_clean_outcome([&] {
    const at::Tensor images = tessera::read_idx_images(path);
    (void)images.sum().item<int64_t>();
  });
  tessera::fuzz::expect_clean_outcome([&] {
    const at::Tensor labels = tessera::read_idx_labels(path);
    (void)labels.sum().item<int64_t>();
  });
  return 0;
}
