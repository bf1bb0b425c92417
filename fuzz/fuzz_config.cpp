// The JSON config loader (tessera/core/config.h) on arbitrary text, through the backbone's config:
// numbers, enums by name, vectors, optionals, unknown keys and validate(). A config it accepts is
// asked for its derived sizes, which must not overflow.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "tessera/core/config.h"
#include "tessera/nn/backbone_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = tessera::fuzz::write_input(data, size, ".json");
  tessera::fuzz::expect_clean_outcome([&] {
    const auto config = tessera::load_config<tessera::BackboneConfig>(path);
    (void)config.parameter_count();
    (void)config.max_length();
    (void)config.resolved_softmax_scale();
  });
  return 0;
}
