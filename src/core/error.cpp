#include "tessera/core/error.h"

#include <cstring>

namespace tessera::detail {

void throw_check_failure(const char* condition, const char* file, int line,
                         const std::string& message) {
  // Users read the message first; the source location is for us.
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  std::string text = message.empty() && condition
                         ? fmt::format("check failed: {}", condition)
                         : message;
  text += fmt::format(" [{}:{}]", base, line);
  throw Error(text);
}

}  // namespace tessera::detail
