#pragma once
// A progress display for long loops (training steps, sampling, dataset passes).
//
// On a terminal it redraws one line ("label [#####-----] 50% 500/1000 41.2 steps/s ETA 12.1s")
// at most every `redraw_interval_seconds`. When the output is not a terminal (a log file, CI)
// redrawing would fill the file with carriage returns, so it writes a whole line instead every
// `log_interval_seconds`, or when another `log_fraction` of the total is done (but not more
// often than `min_log_interval_seconds`). finish() writes a summary line.
//
// Rate and ETA use the average since the start: rate = done / elapsed, ETA = remaining / rate.
// Meant for one producer thread calling advance(); a mutex makes calls from a second thread
// (finish() from a supervisor, say) safe but not fast.

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>

namespace tessera {

class ProgressBar {
 public:
  /// Seconds on any monotonic scale; only differences are used. Injectable for tests.
  using Clock = std::function<double()>;

  struct Options {
    /// Where lines go. nullptr: a terminal stderr gets the redrawn bar; otherwise the lines go
    /// through the tessera logger (info level), so they match other log lines.
    std::ostream* output = nullptr;
    /// Redraw one line in place (true) or write whole lines (false). Unset: true when `output`
    /// is nullptr and stderr is a terminal, false otherwise.
    std::optional<bool> interactive{};
    std::string unit = "steps";  ///< what a step is called in the output
    double redraw_interval_seconds = 0.1;  ///< interactive: least time between redraws
    double log_interval_seconds = 10.0;  ///< log lines: at most this long between lines
    double log_fraction = 0.1;  ///< log lines: also a line at each such fraction of the total
    double min_log_interval_seconds = 1.0;  ///< log lines: at least this long between lines
    Clock clock{};  ///< empty: std::chrono::steady_clock
  };  ///< How and how often the progress is shown.

  /// `total` <= 0 means unknown: no percentage and no ETA.
  ProgressBar(int64_t total, std::string label);
  ProgressBar(int64_t total, std::string label, Options options);  ///< As above, with options.
  /// Ends a redrawn line (so later output starts on a fresh line) without a summary.
  ~ProgressBar();

  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void advance(int64_t steps = 1);  ///< Records `steps` more steps done; redraws or logs when due.
  /// Writes the summary line ("label: 1000 steps in 24.2s (41.3 steps/s)"). Later calls do nothing.
  void finish();

  int64_t done() const;  ///< Steps done so far.
  int64_t total() const { return total_; }  ///< The total given at construction (<= 0: unknown).
  double elapsed_seconds() const;  ///< Seconds since construction.
  double steps_per_second() const;            ///< 0 before any time has passed
  std::optional<double> eta_seconds() const;  ///< unset when total or rate is unknown
  /// The text of one progress report as it would be written now (without "\r").
  std::string status_text() const;

 private:
  struct Snapshot {
    int64_t done;
    double elapsed;
  };
  Snapshot snapshot_locked() const;
  std::string status_text_locked(const Snapshot& snapshot) const;
  void emit_line(const std::string& text);

  const int64_t total_;
  const std::string label_;
  Options options_;
  bool interactive_ = false;

  mutable std::mutex mutex_;
  double start_ = 0;
  int64_t done_ = 0;
  double last_output_ = 0;
  int64_t last_logged_fraction_step_ = 0;  // how many `log_fraction` steps were logged
  bool drew_line_ = false;
  bool finished_ = false;
};  ///< A progress bar, or periodic progress lines where no terminal is attached.

/// "4.2s", "2m05s", "1h02m03s".
std::string format_duration(double seconds);
/// "123", "41.3", "0.52": three significant figures or so, without exponents.
std::string format_rate(double per_second);

}  // namespace tessera
