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

inline std::filesystem::path parity_dir() {
  if (const char* env = std::getenv("TESSERA_PARITY_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return tessera::testing::source_dir() / ".." / "shared" / "parity" / "var-tiny";
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
/// files that `dir` lacks: TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors"). Returns from
/// the enclosing function, like TESSERA_SKIP_FOR_MISSING.
#define TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, ...)                                             \
  do {                                                                                         \
    const auto tessera_missing_ = ::tessera::testing::missing_parity_file(dir, {__VA_ARGS__}); \
    if (!tessera_missing_.empty()) {                                                           \
      TESSERA_SKIP_FOR_MISSING("VAR parity fixture at " << tessera_missing_                    \
                                                        << " (set TESSERA_PARITY_DIR)");       \
    }                                                                                          \
  } while (false)

namespace tessera::testing {

/// The LlamaGen parity fixture folder (../shared/parity/README-llamagen.md):
/// $TESSERA_PARITY_LLAMAGEN_DIR when set, else ../shared/parity/llamagen-tiny beside the checkout.
inline std::filesystem::path llamagen_parity_dir() {
  if (const char* env = std::getenv("TESSERA_PARITY_LLAMAGEN_DIR"); env != nullptr && *env) {
    return env;
  }
  return tessera::testing::source_dir() / ".." / "shared" / "parity" / "llamagen-tiny";
}

}  // namespace tessera::testing

/// TESSERA_SKIP_WITHOUT_VAR_FIXTURE for the LlamaGen fixture: skips naming the first of the
/// files that llamagen_parity_dir() lacks.
#define TESSERA_SKIP_WITHOUT_LLAMAGEN_FIXTURE(...)                                           \
  do {                                                                                       \
    const auto tessera_missing_ = ::tessera::testing::missing_parity_file(                   \
        ::tessera::testing::llamagen_parity_dir(), {__VA_ARGS__});                           \
    if (!tessera_missing_.empty()) {                                                         \
      TESSERA_SKIP_FOR_MISSING("LlamaGen parity fixture at "                                 \
                               << tessera_missing_ << " (set TESSERA_PARITY_LLAMAGEN_DIR)"); \
    }                                                                                        \
  } while (false)

namespace tessera::testing {

/// The MAR parity fixture folder (../shared/parity/README-mar.md): $TESSERA_PARITY_MAR_DIR when
/// set, else ../shared/parity/mar-tiny beside the checkout.
inline std::filesystem::path mar_parity_dir() {
  if (const char* env = std::getenv("TESSERA_PARITY_MAR_DIR"); env != nullptr && *env) {
    return env;
  }
  return tessera::testing::source_dir() / ".." / "shared" / "parity" / "mar-tiny";
}

}  // namespace tessera::testing

/// TESSERA_SKIP_WITHOUT_VAR_FIXTURE for the MAR fixture.
#define TESSERA_SKIP_WITHOUT_MAR_FIXTURE(...)                                                \
  do {                                                                                       \
    const auto tessera_missing_ = ::tessera::testing::missing_parity_file(                   \
        ::tessera::testing::mar_parity_dir(), {__VA_ARGS__});                                \
    if (!tessera_missing_.empty()) {                                                         \
      TESSERA_SKIP_FOR_MISSING("MAR parity fixture at " << tessera_missing_                  \
                                                        << " (set TESSERA_PARITY_MAR_DIR)"); \
    }                                                                                        \
  } while (false)
