#pragma once
// The VAR parity fixture folder (../shared/parity/README.md): $TESSERA_PARITY_DIR when set, else
// ../shared/parity/var-tiny beside the checkout. A test that reads it names the files it needs
// (TESSERA_SKIP_WITHOUT_VAR_FIXTURE) and, when one is absent, skips naming that path, or fails
// under TESSERA_REQUIRE_ALL (tests/common/prerequisite.h). The tests read every size from the
// files' metadata and shapes, so that a fixture the reference makes at another size passes too.

#include <cstdlib>
#include <filesystem>
#include <initializer_list>

#include "common/prerequisite.h"
#include "common/source_paths.h"

namespace tessera::testing {

/// A fixture folder: the one the environment variable `variable` names when set, else
/// ../shared/parity/`folder` beside the checkout.
inline std::filesystem::path parity_fixture_dir(const char* variable, const char* folder) {
  if (const char* env = std::getenv(variable); env != nullptr && *env != '\0') return env;
  return tessera::testing::source_dir() / ".." / "shared" / "parity" / folder;
}

inline std::filesystem::path parity_dir() {
  return parity_fixture_dir("TESSERA_PARITY_DIR", "var-tiny");
}

/// The first of `files` that `dir` lacks (`dir` itself when the folder is absent), or an empty
/// path when every one is there: what a skip message names.
inline std::filesystem::path missing_parity_file(const std::filesystem::path& dir,
                                                 std::initializer_list<const char*> files) {
  if (!std::filesystem::is_directory(dir)) return dir;
  for (const char* name : files) {
    if (!std::filesystem::exists(dir / name)) return dir / name;
  }
  return {};
}

}  // namespace tessera::testing

/// Skips the current test (fails it under TESSERA_REQUIRE_ALL) naming the first of the fixture's
/// files that `dir` lacks, with the fixture's name and the variable that points at it:
/// TESSERA_SKIP_WITHOUT_FIXTURE("VAR", "TESSERA_PARITY_DIR", dir, "io.safetensors"). Returns from
/// the enclosing function, like TESSERA_SKIP_FOR_MISSING. TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir,
/// files...) is the VAR fixture's.
#define TESSERA_SKIP_WITHOUT_FIXTURE(what, variable, dir, ...)                                 \
  do {                                                                                         \
    const auto tessera_missing_ = ::tessera::testing::missing_parity_file(dir, {__VA_ARGS__}); \
    if (!tessera_missing_.empty()) {                                                           \
      TESSERA_SKIP_FOR_MISSING(what " parity fixture at " << tessera_missing_                  \
                                                          << " (set " variable ")");           \
    }                                                                                          \
  } while (false)
#define TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, ...) \
  TESSERA_SKIP_WITHOUT_FIXTURE("VAR", "TESSERA_PARITY_DIR", dir, __VA_ARGS__)

namespace tessera::testing {

/// The LlamaGen parity fixture folder (../shared/parity/README-llamagen.md):
/// $TESSERA_PARITY_LLAMAGEN_DIR when set, else ../shared/parity/llamagen-tiny beside the checkout.
inline std::filesystem::path llamagen_parity_dir() {
  return parity_fixture_dir("TESSERA_PARITY_LLAMAGEN_DIR", "llamagen-tiny");
}

}  // namespace tessera::testing

/// TESSERA_SKIP_WITHOUT_FIXTURE for the LlamaGen fixture in llamagen_parity_dir().
#define TESSERA_SKIP_WITHOUT_LLAMAGEN_FIXTURE(...)                        \
  TESSERA_SKIP_WITHOUT_FIXTURE("LlamaGen", "TESSERA_PARITY_LLAMAGEN_DIR", \
                               ::tessera::testing::llamagen_parity_dir(), __VA_ARGS__)

namespace tessera::testing {

/// The MAR parity fixture folder (../shared/parity/README-mar.md): $TESSERA_PARITY_MAR_DIR when
/// set, else ../shared/parity/mar-tiny beside the checkout.
inline std::filesystem::path mar_parity_dir() {
  return parity_fixture_dir("TESSERA_PARITY_MAR_DIR", "mar-tiny");
}

}  // namespace tessera::testing

/// TESSERA_SKIP_WITHOUT_FIXTURE for the MAR fixture.
#define TESSERA_SKIP_WITHOUT_MAR_FIXTURE(...)                   \
  TESSERA_SKIP_WITHOUT_FIXTURE("MAR", "TESSERA_PARITY_MAR_DIR", \
                               ::tessera::testing::mar_parity_dir(), __VA_ARGS__)
