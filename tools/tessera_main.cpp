// The `tessera` command line.
#include <CLI/CLI.hpp>
#include <ATen/Parallel.h>
#include <ATen/Context.h>

#include <cstdio>
#include <exception>

#include "tessera/core/error.h"
#include "tessera/core/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"Tessera: masked and autoregressive generative modeling on LibTorch"};
  app.require_subcommand(1);
  auto* info = app.add_subcommand("info", "print the build configuration");
  CLI11_PARSE(app, argc, argv);
  try {
    if (*info) {
      std::printf("tessera 0.1.0\n%s", at::get_parallel_info().c_str());
    }
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "tessera: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
