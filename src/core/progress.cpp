#include "tessera/core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>

#include "tessera/core/logging.h"

namespace tessera {
namespace {

constexpr int kBarWidth = 30;

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  // Compare after rounding so that 59.97 s reads "1m00s", not "60.0s".
  if (std::round(seconds * 10.0) / 10.0 < 60.0) return fmt::format("{:.1f}s", seconds);
  const auto whole = static_cast<long long>(std::llround(seconds));
  if (whole < 3600) return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}h{:02}m{:02}s", whole / 3600, (whole / 60) % 60, whole % 60);
}

std::string format_rate(double per_second) {
  if (!std::isfinite(per_second) || per_second < 0) return "?";
  // Thresholds sit where rounding would carry into the next digit: 9.996 reads "10.0".
  if (per_second >= 99.95) return fmt::format("{:.0f}", per_second);
  if (per_second >= 9.995) return fmt::format("{:.1f}", per_second);
  return fmt::format("{:.2f}", per_second);
}

ProgressBar::ProgressBar(int64_t total, std::string label)
    : ProgressBar(total, std::move(label), Options{}) {}

ProgressBar::ProgressBar(int64_t total, std::string label, Options options)
    : total_(total), label_(std::move(label)), options_(std::move(options)) {
  if (!options_.clock) options_.clock = steady_seconds;
  interactive_ =
      options_.interactive.value_or(options_.output == nullptr && ::isatty(STDERR_FILENO) == 1);
  start_ = options_.clock();
  last_output_ = start_;
}

ProgressBar::~ProgressBar() {
  std::lock_guard lock(mutex_);
  if (!finished_ && interactive_ && drew_line_) {
    // Leave the last drawn state visible and move later output to a fresh line.
    std::ostream& out = options_.output ? *options_.output : std::cerr;
    out << '\n' << std::flush;
  }
}

ProgressBar::Snapshot ProgressBar::snapshot_locked() const {
  return {done_, std::max(0.0, options_.clock() - start_)};
}

int64_t ProgressBar::done() const {
  std::lock_guard lock(mutex_);
  return done_;
}

double ProgressBar::elapsed_seconds() const {
  std::lock_guard lock(mutex_);
  return snapshot_locked().elapsed;
}

double ProgressBar::steps_per_second() const {
  std::lock_guard lock(mutex_);
  const Snapshot now = snapshot_locked();
  return now.elapsed > 0 ? static_cast<double>(now.done) / now.elapsed : 0.0;
}

std::optional<double> ProgressBar::eta_seconds() const {
  std::lock_guard lock(mutex_);
  const Snapshot now = snapshot_locked();
  const double rate = now.elapsed > 0 ? static_cast<double>(now.done) / now.elapsed : 0.0;
  if (total_ <= 0 || rate <= 0) return std::nullopt;
  return static_cast<double>(std::max<int64_t>(0, total_ - now.done)) / rate;
}

std::string ProgressBar::status_text() const {
  std::lock_guard lock(mutex_);
  return status_text_locked(snapshot_locked());
}

std::string ProgressBar::status_text_locked(const Snapshot& now) const {
  const double rate = now.elapsed > 0 ? static_cast<double>(now.done) / now.elapsed : 0.0;
  const std::string rate_text = fmt::format("{} {}/s", format_rate(rate), options_.unit);
  if (total_ <= 0) {
    return fmt::format("{}: {} {}, {}, elapsed {}", label_, now.done, options_.unit, rate_text,
                       format_duration(now.elapsed));
  }
  const double fraction = static_cast<double>(now.done) / static_cast<double>(total_);
  const auto percent = static_cast<int>(std::floor(100.0 * fraction));
  const std::string eta =
      rate > 0
          ? format_duration(static_cast<double>(std::max<int64_t>(0, total_ - now.done)) / rate)
          : "?";
  if (interactive_) {
    const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * kBarWidth);
    return fmt::format("{} [{}{}] {:3d}% {}/{} {} ETA {}", label_, std::string(filled, '#'),
                       std::string(kBarWidth - filled, '-'), percent, now.done, total_, rate_text,
                       eta);
  }
  return fmt::format("{}: {}/{} ({}%), {}, elapsed {}, ETA {}", label_, now.done, total_, percent,
                     rate_text, format_duration(now.elapsed), eta);
}

void ProgressBar::emit_line(const std::string& text) {
  if (interactive_) {
    std::ostream& out = options_.output ? *options_.output : std::cerr;
    // "\x1b[K" clears what a longer previous line left behind.
    out << '\r' << text << "\x1b[K" << std::flush;
    drew_line_ = true;
  } else if (options_.output) {
    *options_.output << text << '\n' << std::flush;
  } else {
    TESSERA_LOG_INFO("{}", text);
  }
}

void ProgressBar::advance(int64_t steps) {
  std::lock_guard lock(mutex_);
  done_ += steps;
  if (finished_) return;
  const double now = options_.clock();
  const double since_output = now - last_output_;
  if (interactive_) {
    if (since_output < options_.redraw_interval_seconds) return;
  } else {
    // The summary from finish() reports completion; a "100%" line just before it is noise.
    if (total_ > 0 && done_ >= total_) return;
    int64_t fraction_step = last_logged_fraction_step_;
    if (total_ > 0 && options_.log_fraction > 0) {
      // The epsilon keeps 300/1000/0.1 = 2.9999999999999996 in step 3, where it belongs.
      fraction_step = static_cast<int64_t>(std::floor(
          static_cast<double>(done_) / static_cast<double>(total_) / options_.log_fraction + 1e-9));
    }
    const bool interval_passed = since_output >= options_.log_interval_seconds;
    const bool fraction_passed = fraction_step > last_logged_fraction_step_ &&
                                 since_output >= options_.min_log_interval_seconds;
    if (!interval_passed && !fraction_passed) return;
    last_logged_fraction_step_ = fraction_step;
  }
  last_output_ = now;
  emit_line(status_text_locked({done_, std::max(0.0, now - start_)}));
}

void ProgressBar::finish() {
  std::lock_guard lock(mutex_);
  if (finished_) return;
  finished_ = true;
  const Snapshot now = snapshot_locked();
  const double rate = now.elapsed > 0 ? static_cast<double>(now.done) / now.elapsed : 0.0;
  const std::string summary =
      fmt::format("{}: {} {} in {} ({} {}/s)", label_, now.done, options_.unit,
                  format_duration(now.elapsed), format_rate(rate), options_.unit);
  if (interactive_) {
    std::ostream& out = options_.output ? *options_.output : std::cerr;
    out << '\r' << summary << "\x1b[K\n" << std::flush;
  } else {
    emit_line(summary);
  }
}

}  // namespace tessera
