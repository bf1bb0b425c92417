#include "tessera/data/labeled_images.h"

#include <ATen/ATen.h>

#include "tessera/core/error.h"

namespace tessera {

at::Tensor convert_pixels(const at::Tensor& images, PixelRange range) {
  TESSERA_CHECK(images.scalar_type() == at::kByte, "convert_pixels expects uint8 images, got {}",
                c10::toString(images.scalar_type()));
  switch (range) {
    case PixelRange::uint8:
      return images;
    case PixelRange::zero_to_one:
      return images.to(at::kFloat).div_(255.0);
    case PixelRange::minus_one_to_one:
      return images.to(at::kFloat).div_(127.5).sub_(1.0);
  }
  TESSERA_FAIL("unknown PixelRange value {}", static_cast<int>(range));
}

}  // namespace tessera
