#include "tessera/core/error.h"

#include <gtest/gtest.h>

#include "tessera/core/logging.h"

namespace tessera {
namespace {

TEST(Error, CheckFormatsTheMessageOnlyOnFailure) {
  int formatted = 0;
  auto count = [&] { return ++formatted; };
  TESSERA_CHECK(true, "never formatted {}", count());
  EXPECT_EQ(formatted, 0);
  try {
    TESSERA_CHECK(1 + 1 == 3, "expected {}, got {}", 3, 2);
    ADD_FAILURE() << "expected a throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("expected 3, got 2", 0), 0u) << what;
    EXPECT_NE(what.find("error_test.cpp:"), std::string::npos) << what;
  }
}

TEST(Error, CheckWithoutMessageNamesTheCondition) {
  try {
    TESSERA_CHECK(2 < 1);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 < 1"), std::string::npos) << e.what();
  }
}

TEST(Logging, ParsesLevelsAndRejectsUnknownOnes) {
  EXPECT_EQ(parse_log_level("DEBUG"), LogLevel::debug);
  EXPECT_EQ(parse_log_level("warning"), LogLevel::warn);
  EXPECT_EQ(parse_log_level("off"), LogLevel::off);
  EXPECT_THROW(parse_log_level("loud"), Error);
  const LogLevel before = log_level();
  set_log_level(LogLevel::error);
  EXPECT_EQ(log_level(), LogLevel::error);
  EXPECT_FALSE(logger().should_log(spdlog::level::info));
  set_log_level(before);
}

}  // namespace
}  // namespace tessera
