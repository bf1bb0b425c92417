#include "tessera/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <string>

#include "tessera/core/error.h"

namespace tessera {
namespace {

constexpr std::array<std::string_view, 7> kLevelNames = {"trace", "debug", "info",    "warn",
                                                         "error", "critical", "off"};

spdlog::level::level_enum to_spdlog(LogLevel level) {
  return static_cast<spdlog::level::level_enum>(static_cast<int>(level));
}

std::shared_ptr<spdlog::logger> make_logger() {
  // Logs go to stderr so that programs can print tables and data on stdout.
  auto logger = spdlog::stderr_color_mt("tessera");
  logger->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  LogLevel level = LogLevel::info;
  if (const char* env = std::getenv("TESSERA_LOG_LEVEL"); env && *env) {
    try {
      level = parse_log_level(env);
    } catch (const Error& e) {
      logger->warn("ignoring TESSERA_LOG_LEVEL: {}", e.what());
    }
  }
  logger->set_level(to_spdlog(level));
  return logger;
}

spdlog::logger& shared_logger() {
  static std::shared_ptr<spdlog::logger> instance = make_logger();
  return *instance;
}

}  // namespace

LogLevel parse_log_level(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "warning") lower = "warn";
  for (size_t i = 0; i < kLevelNames.size(); ++i) {
    if (lower == kLevelNames[i]) return static_cast<LogLevel>(i);
  }
  TESSERA_FAIL("unknown log level '{}': expected one of trace, debug, info, warn, error, critical, off",
               name);
}

void set_log_level(LogLevel level) { shared_logger().set_level(to_spdlog(level)); }

LogLevel log_level() { return static_cast<LogLevel>(static_cast<int>(shared_logger().level())); }

spdlog::logger& logger() { return shared_logger(); }

}  // namespace tessera
