#pragma once
// The message of the tessera::Error an action throws, or "" when it throws none: tests check that
// bad input is rejected with a message naming what was wrong.

#include <functional>
#include <string>

#include "tessera/core/error.h"

namespace tessera::testing {

inline std::string error_message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace tessera::testing
