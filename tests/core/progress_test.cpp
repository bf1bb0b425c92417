// ProgressBar: rate and ETA arithmetic and the output cadence, on a fake clock.
#include "tessera/core/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tessera {
namespace {

// A clock the test moves by hand.
struct FakeClock {
  double now = 100.0;
  ProgressBar::Clock function() {
    return [this] { return now; };
  }
};

ProgressBar::Options log_lines_to(std::ostream& out, FakeClock& clock) {
  ProgressBar::Options options;
  options.output = &out;
  options.interactive = false;
  options.clock = clock.function();
  return options;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(ProgressBar, RateAndEtaArithmetic) {
  FakeClock clock;
  std::ostringstream out;
  ProgressBar bar(1000, "train", log_lines_to(out, clock));
  EXPECT_EQ(bar.steps_per_second(), 0.0);
  EXPECT_FALSE(bar.eta_seconds().has_value());

  clock.now = 110.0;
  bar.advance(250);
  EXPECT_EQ(bar.done(), 250);
  EXPECT_DOUBLE_EQ(bar.elapsed_seconds(), 10.0);
  EXPECT_DOUBLE_EQ(bar.steps_per_second(), 25.0);  // 250 steps / 10 s
  ASSERT_TRUE(bar.eta_seconds().has_value());
  EXPECT_DOUBLE_EQ(*bar.eta_seconds(), 30.0);  // 750 steps left / 25 per s

  clock.now = 140.0;  // the rate is the average since the start, not the latest burst
  bar.advance(750);
  EXPECT_DOUBLE_EQ(bar.steps_per_second(), 25.0);
  EXPECT_DOUBLE_EQ(*bar.eta_seconds(), 0.0);
  EXPECT_EQ(bar.status_text(), "train: 1000/1000 (100%), 25.0 steps/s, elapsed 40.0s, ETA 0.0s");
}

TEST(ProgressBar, LogLinesEveryTenPercentOrEveryInterval) {
  FakeClock clock;  // starts at 100
  std::ostringstream out;
  {
    ProgressBar bar(1000, "train", log_lines_to(out, clock));
    clock.now = 100.5;
    bar.advance(50);  // 5%: nothing
    clock.now = 101.0;
    bar.advance(50);  // 10% after 1 s: a line
    clock.now = 101.5;
    bar.advance(100);  // 20%, but only 0.5 s after the last line: held back
    clock.now = 102.0;
    bar.advance(0);  // 20%, 1 s after the last line: a line
    clock.now = 115.0;
    bar.advance(10);  // still 21%, but 13 s since the last line: a line
    clock.now = 120.0;
    bar.advance(790);  // done: finish() reports it
    bar.finish();
    bar.finish();  // a second finish writes nothing
  }
  EXPECT_EQ(lines_of(out.str()),
            (std::vector<std::string>{
                "train: 100/1000 (10%), 100 steps/s, elapsed 1.0s, ETA 9.0s",
                "train: 200/1000 (20%), 100 steps/s, elapsed 2.0s, ETA 8.0s",
                "train: 210/1000 (21%), 14.0 steps/s, elapsed 15.0s, ETA 56.4s",  // 790 / 14
                "train: 1000 steps in 20.0s (50.0 steps/s)",
            }));
}

TEST(ProgressBar, IntervalIsConfigurable) {
  FakeClock clock;
  std::ostringstream out;
  ProgressBar::Options options = log_lines_to(out, clock);
  options.log_interval_seconds = 2.0;
  options.log_fraction = 0;  // time only
  options.unit = "images";
  ProgressBar bar(0, "copy", options);  // unknown total
  for (int i = 1; i <= 10; ++i) {
    clock.now = 100.0 + i;
    bar.advance(30);
  }
  EXPECT_FALSE(bar.eta_seconds().has_value());
  EXPECT_EQ(lines_of(out.str()), (std::vector<std::string>{
                                     "copy: 60 images, 30.0 images/s, elapsed 2.0s",
                                     "copy: 120 images, 30.0 images/s, elapsed 4.0s",
                                     "copy: 180 images, 30.0 images/s, elapsed 6.0s",
                                     "copy: 240 images, 30.0 images/s, elapsed 8.0s",
                                     "copy: 300 images, 30.0 images/s, elapsed 10.0s",
                                 }));
}

TEST(ProgressBar, TerminalModeRedrawsOneLineAtMostTenTimesASecond) {
  FakeClock clock;
  clock.now = 0.0;
  std::ostringstream out;
  ProgressBar::Options options;
  options.output = &out;
  options.interactive = true;
  options.clock = clock.function();
  ProgressBar bar(1600, "sample", options);
  for (int i = 1; i <= 16; ++i) {
    clock.now = 0.0625 * i;  // 16 calls a second (binary-exact times)...
    bar.advance(50);
  }
  const std::string drawn = out.str();
  // ...drawn every other call, 0.125 s apart, since 0.0625 s is under the 0.1 s redraw interval.
  EXPECT_EQ(std::count(drawn.begin(), drawn.end(), '\r'), 8);
  EXPECT_EQ(drawn.find('\n'), std::string::npos);
  const std::string last_draw = drawn.substr(drawn.rfind('\r'));
  EXPECT_EQ(last_draw,
            "\rsample [###############---------------]  50% 800/1600 800 steps/s ETA 1.0s\x1b[K");
  bar.finish();
  EXPECT_EQ(out.str().substr(drawn.size()), "\rsample: 800 steps in 1.0s (800 steps/s)\x1b[K\n");
}

TEST(ProgressBar, DestroyedWithoutFinishEndsTheDrawnLine) {
  FakeClock clock;
  std::ostringstream out;
  {
    ProgressBar::Options options;
    options.output = &out;
    options.interactive = true;
    options.clock = clock.function();
    ProgressBar bar(10, "x", options);
    clock.now += 1;
    bar.advance();
  }
  ASSERT_FALSE(out.str().empty());
  EXPECT_EQ(out.str().back(), '\n');
  EXPECT_EQ(out.str().find("steps in"), std::string::npos);  // no summary: it did not finish
}

TEST(ProgressBar, CountsEveryStepFromSeveralThreads) {
  std::ostringstream out;
  ProgressBar::Options options;
  options.output = &out;
  options.interactive = false;
  ProgressBar bar(40000, "threads", options);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) bar.advance();
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bar.done(), 40000);
}

TEST(FormatDuration, PicksUnitsByMagnitude) {
  EXPECT_EQ(format_duration(0.0), "0.0s");
  EXPECT_EQ(format_duration(4.24), "4.2s");
  EXPECT_EQ(format_duration(59.94), "59.9s");
  EXPECT_EQ(format_duration(59.97), "1m00s");
  EXPECT_EQ(format_duration(125.0), "2m05s");
  EXPECT_EQ(format_duration(3723.0), "1h02m03s");
  EXPECT_EQ(format_duration(-1.0), "?");
}

TEST(FormatRate, ThreeSignificantFiguresOrSo) {
  EXPECT_EQ(format_rate(0.5234), "0.52");
  EXPECT_EQ(format_rate(9.999), "10.0");
  EXPECT_EQ(format_rate(99.96), "100");
  EXPECT_EQ(format_rate(41.27), "41.3");
  EXPECT_EQ(format_rate(1234.4), "1234");
}

}  // namespace
}  // namespace tessera
