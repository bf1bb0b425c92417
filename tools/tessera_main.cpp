// The `tessera` command line: one file per subcommand (command.h), listed here.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "command.h"
#include "tessera/core/heap_reuse.h"
#include "tessera/version.h"

namespace {

// The command as typed, for results files: arguments joined by spaces, those holding anything
// but [A-Za-z0-9_./=:,+-] single-quoted.
std::string command_line(int argc, char** argv) {
  std::string line;
  for (int i = 0; i < argc; ++i) {
    std::string arg = i == 0 ? std::filesystem::path(argv[0]).filename().string() : argv[i];
    const bool plain = !arg.empty() && arg.find_first_not_of(
                                           "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789_./=:,+-") == std::string::npos;
    if (!plain) {
      std::string quoted = "'";
      for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      arg = quoted + "'";
    }
    line += (i == 0 ? "" : " ") + arg;
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  tessera::cli::CommandContext context;
  context.command_line = command_line(argc, argv);
  context.arguments.assign(argv + 1, argv + argc);
  // Every subcommand allocates the same activations step after step (Note [Heap reuse]).
  context.heap = tessera::keep_freed_heap_memory();

  CLI::App app{"Tessera: masked and autoregressive generative modeling on LibTorch"};
  app.set_version_flag("--version", "tessera " TESSERA_VERSION_STRING);
  app.require_subcommand(1);
  tessera::cli::setup_info(app, context);
  tessera::cli::setup_demo(app, context);
  tessera::cli::setup_train_tokenizer(app, context);
  tessera::cli::setup_train(app, context);
  tessera::cli::setup_sample(app, context);
  tessera::cli::setup_eval(app, context);
  tessera::cli::setup_convert(app, context);

  // The chosen subcommand runs in its callback, inside parse().
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // tessera::Error, and LibTorch's and the standard library's own types: a message beats an
    // abort.
    std::fprintf(stderr, "tessera: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
