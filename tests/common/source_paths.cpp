// The one test file compiled with the folders' paths (source_paths.h says why).
#include "common/source_paths.h"

namespace tessera::testing {

std::filesystem::path source_dir() { return TESSERA_SOURCE_DIR; }
std::filesystem::path binary_dir() { return TESSERA_BINARY_DIR; }

}  // namespace tessera::testing
