#pragma once
// The message of the tessera::Error an action throws, or "" when it throws none: tests check that
// bad input is rejected with a message naming what was wrong.

#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
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

/// Runs `action` expecting a tessera::Error whose message holds every one of `needles`.
inline void expect_error(const std::function<void()>& action,
                         std::initializer_list<std::string> needles) {
  try {
    action();
    ADD_FAILURE() << "expected tessera::Error, nothing was thrown";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message lacks '" << needle << "': " << message;
    }
  }
}

}  // namespace tessera::testing
