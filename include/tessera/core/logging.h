#pragma once
// Logging through spdlog. The level comes from TESSERA_LOG_LEVEL (trace, debug, info, warn,
// error, critical, off) when the first log line is written, or from set_log_level().

#include <spdlog/spdlog.h>

#include <string_view>

namespace tessera {
/// Logger verbosity: spdlog's levels.
enum class LogLevel { trace, debug, info, warn, error, critical, off };

/// Parses "trace" ... "off" (case-insensitive); throws tessera::Error naming the bad value.
LogLevel parse_log_level(std::string_view name);

void set_log_level(LogLevel level);  ///< Sets the level of the tessera logger.
LogLevel log_level();  ///< The tessera logger's level.

/// The project's logger ("tessera"), created on first use with the level from TESSERA_LOG_LEVEL.
spdlog::logger& logger();

}  // namespace tessera

#define TESSERA_LOG_DEBUG(...) ::tessera::logger().debug(__VA_ARGS__)
#define TESSERA_LOG_INFO(...) ::tessera::logger().info(__VA_ARGS__)
#define TESSERA_LOG_WARN(...) ::tessera::logger().warn(__VA_ARGS__)
#define TESSERA_LOG_ERROR(...) ::tessera::logger().error(__VA_ARGS__)
