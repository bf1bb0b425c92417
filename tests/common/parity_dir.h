#pragma once
// The VAR parity fixture folder (../shared/parity/README.md): $TESSERA_PARITY_DIR when set, else
// ../shared/parity/var-tiny beside the checkout. Tests skip with a message when it is absent.

#include <cstdlib>
#include <filesystem>

namespace tessera::testing {

inline std::filesystem::path parity_dir() {
  if (const char* env = std::getenv("TESSERA_PARITY_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return std::filesystem::path(TESSERA_SOURCE_DIR) / ".." / "shared" / "parity" / "var-tiny";
}

}  // namespace tessera::testing
