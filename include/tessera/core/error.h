#pragma once
// Errors: every user-facing failure throws tessera::Error with a message naming the bad
// value and what was expected. Never abort, never undefined behaviour on user input.

#include <fmt/format.h>

#include <stdexcept>
#include <string>
/// Tessera's public API: tokenizers, the backbone, heads, schedules, attention and pipelines.
namespace tessera {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}  ///< `what`: the message.
};  ///< What every user-facing failure throws (TESSERA_CHECK).

namespace detail {
[[noreturn]] void throw_check_failure(const char* condition, const char* file, int line,
                                      const std::string& message);

inline std::string format_check_message() { return {}; }
template <typename... Args>
std::string format_check_message(fmt::format_string<Args...> format, Args&&... args) {
  return fmt::format(format, std::forward<Args>(args)...);
}
}  // namespace detail

}  // namespace tessera

/// TESSERA_CHECK(cond, "format {}", args...): throws tessera::Error when `cond` is false. The
/// message should say what was wrong, what was expected and what was got; the arguments are
/// formatted only on failure.
#define TESSERA_CHECK(cond, ...)                                                         \
  do {                                                                                   \
    if (!(cond)) [[unlikely]] {                                                          \
      ::tessera::detail::throw_check_failure(                                            \
          #cond, __FILE__, __LINE__, ::tessera::detail::format_check_message(__VA_ARGS__)); \
    }                                                                                    \
  } while (false)

// TESSERA_FAIL("format {}", args...): throws tessera::Error unconditionally.
#define TESSERA_FAIL(...)                                                                \
  ::tessera::detail::throw_check_failure(nullptr, __FILE__, __LINE__,                   \
                                         ::tessera::detail::format_check_message(__VA_ARGS__))
