#pragma once
// Command-line parsing shared by the bench/ programs: flags as `--flag VALUE` or `--flag=VALUE`,
// errors as "<program>: <message>" plus the usage line and exit status 2.
//
// Note [Why the benchmarks do not use Google Benchmark]
// Every speed claim is a ratio against a baseline timed in the same run (docs/performance.md), so
// each program times the baseline and the candidate on the same inputs one call at a time,
// alternating round-robin, and reports the medians and their ratio per configuration, with the
// machine, in one JSON file. Google Benchmark times each benchmark as its own loop of iterations;
// its random interleaving shuffles whole repetitions, not single calls, and a ratio between two of
// its benchmarks is left to post-processing. It was linked but unused, so it was dropped rather
// than kept as a dependency that measures nothing.
//
//   BenchArgs args("attention_bench", "[--out DIR] [--runs N]", argc, argv);
//   while (args.next()) {
//     if (args.flag() == "--runs") options.runs = args.positive_value();
//     else args.unknown();
//   }

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>

namespace tessera::bench {

// Where a program's JSON goes by default: bench/ in the build folder it was built in.
inline std::filesystem::path default_out_dir() {
#ifdef TESSERA_BINARY_DIR
  return std::filesystem::path(TESSERA_BINARY_DIR) / "bench";
#else
  return std::filesystem::path("build") / "bench";
#endif
}

class BenchArgs {
 public:
  BenchArgs(std::string program, std::string usage, int argc, char** argv)
      : program_(std::move(program)), usage_(std::move(usage)), argc_(argc), argv_(argv) {}

  // Advances to the next flag; false when none is left.
  bool next() {
    if (++index_ >= argc_) return false;
    flag_ = argv_[index_];
    inline_value_.reset();
    if (flag_.starts_with("--") && flag_.find('=') != std::string::npos) {
      inline_value_ = flag_.substr(flag_.find('=') + 1);
      flag_ = flag_.substr(0, flag_.find('='));
    }
    return true;
  }
  const std::string& flag() const { return flag_; }

  // The current flag's value (after '=' or the next argument).
  std::string value() {
    if (inline_value_) return *inline_value_;
    if (index_ + 1 >= argc_) fail(fmt::format("{} needs a value", flag_));
    return argv_[++index_];
  }
  int positive_value() {
    const std::string text = value();
    try {
      size_t used = 0;
      const int parsed = std::stoi(text, &used);
      if (used == text.size() && parsed > 0) return parsed;
    } catch (const std::exception&) {
    }
    fail(fmt::format("{} wants a positive integer, got '{}'", flag_, text));
  }

  [[noreturn]] void fail(const std::string& message) const {
    std::fprintf(stderr, "%s: %s\nusage: %s %s\n", program_.c_str(), message.c_str(),
                 program_.c_str(), usage_.c_str());
    std::exit(2);
  }
  [[noreturn]] void unknown() const { fail(fmt::format("unknown argument '{}'", flag_)); }

 private:
  std::string program_, usage_;
  int argc_ = 0;
  char** argv_ = nullptr;
  int index_ = 0;
  std::string flag_;
  std::optional<std::string> inline_value_;
};

}  // namespace tessera::bench
