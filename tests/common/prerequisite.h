#pragma once
// Tests that need something outside the repository: a parity fixture in ../shared/parity, the
// Fashion-MNIST data set, nvcc (a build with the CUDA kernels). On a user's machine a missing
// prerequisite skips the test with a message naming it; in CI (.ci/run sets TESSERA_REQUIRE_ALL=1)
// it fails the test instead, so that a check nobody ran never passes as one that did.
//
// Only prerequisites go through TESSERA_SKIP_FOR_MISSING. A skip that says something about the
// machine rather than a missing install (no GPU in it, a sanitizer build) stays a plain
// GTEST_SKIP: CI cannot be asked to have a GPU.
//
// The skip message starts with "missing prerequisite: ", which the summary at the end of
// `make test` (scripts/test-summary) groups by.

#include <gtest/gtest.h>

#include <cstdlib>
#include <string_view>

namespace tessera::testing {

/// True when TESSERA_REQUIRE_ALL is set to anything but "" or "0".
inline bool prerequisites_required() {
  const char* value = std::getenv("TESSERA_REQUIRE_ALL");
  return value != nullptr && std::string_view(value) != "" && std::string_view(value) != "0";
}

}  // namespace tessera::testing

/// Skips the current test, or fails it under TESSERA_REQUIRE_ALL, naming what is missing (anything
/// streamable: `TESSERA_SKIP_FOR_MISSING("parity fixture " << dir)`). Returns from the enclosing
/// function, like GTEST_SKIP and FAIL: use it in a TEST body, SetUp, or a void helper.
#define TESSERA_SKIP_FOR_MISSING(what)                                                  \
  do {                                                                                  \
    if (::tessera::testing::prerequisites_required()) {                                 \
      FAIL() << "missing prerequisite: " << what                                        \
             << " (TESSERA_REQUIRE_ALL is set: CI needs every reference check to run)"; \
    }                                                                                   \
    GTEST_SKIP() << "missing prerequisite: " << what;                                   \
  } while (false)
