#pragma once
// One file per `tessera` subcommand: each `setup_<command>(app, context)` adds its subcommand to
// the parser, with its options and a callback that runs it once the command line is parsed.
// main() (tessera_main.cpp) only lists them.

#include <CLI/CLI.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "tessera/core/heap_reuse.h"

namespace tessera::cli {

/// What every subcommand may need of the process it runs in.
struct CommandContext {
  std::string command_line;  ///< the command as typed, for results files (results_file.h)
  /// The arguments after the program's name, for commands that start copies of themselves
  /// (`--nproc`, local_ranks.h).
  std::vector<std::string> arguments;
  /// When the command started: results files record the whole command's wall time.
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  HeapReuseReport heap;  ///< Note [Heap reuse], as applied before parsing
};

void setup_info(CLI::App& app, const CommandContext& context);
void setup_demo(CLI::App& app, const CommandContext& context);
void setup_train_tokenizer(CLI::App& app, const CommandContext& context);
void setup_train(CLI::App& app, const CommandContext& context);
void setup_sample(CLI::App& app, const CommandContext& context);
void setup_eval(CLI::App& app, const CommandContext& context);
void setup_convert(CLI::App& app, const CommandContext& context);

}  // namespace tessera::cli
