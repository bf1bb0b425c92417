#pragma once
// Where the tests find the repository's files (fixtures, configs, shipped models) and the build's
// programs. The folders' absolute paths are compiled into source_paths.cpp alone: ccache's
// CCACHE_BASEDIR makes paths in a compile command relative, but not paths inside a macro's value,
// so a -DTESSERA_SOURCE_DIR="/abs/path" on every test file made each fresh clone (CI's) recompile
// all of them.

#include <filesystem>

namespace tessera::testing {

std::filesystem::path source_dir();  ///< The repository's root folder.
std::filesystem::path binary_dir();  ///< The build folder (bin/tessera is there).

}  // namespace tessera::testing
