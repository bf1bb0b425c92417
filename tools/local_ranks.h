#pragma once
// `--nproc N` of `tessera train` and `tessera train-tokenizer`: starts N copies of this command on
// this machine as the ranks of one data-parallel job, with the variables torchrun would set
// (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT a free port), for users
// without a launcher.

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace tessera::cli {

/// True inside a job already (WORLD_SIZE is set): --nproc then must not start another one.
bool inside_distributed_job();

/// Runs `arguments` (the command line after the program name, without --nproc) as `nproc`
/// processes and waits for them. When a rank exits with an error, the others are given
/// `grace_seconds` to stop on their own (they name the failed rank themselves) and are then
/// killed. Returns 0 when every rank succeeded; otherwise prints which ranks failed and returns
/// the first failure's exit status.
int run_local_ranks(int nproc, const std::vector<std::string>& arguments, double grace_seconds);

/// Adds `--nproc N` to a training command: every trainer offers it with the same meaning.
void add_nproc_option(CLI::App& command, int& nproc);

/// What a training command's callback does first: with nproc > 1, runs the command's `arguments`
/// (--nproc dropped) as nproc local ranks, giving the others the ranks' distributed timeout plus
/// 30 s after a failure, exits the process with the first failure's status, and returns true once
/// every rank succeeded. With nproc <= 1 it returns false: the caller trains in this process.
bool ran_as_local_ranks(int nproc, const std::vector<std::string>& arguments,
                        double distributed_timeout_seconds);

/// The command line `arguments` without the option `--nproc` and its value (`--nproc N` or
/// `--nproc=N`).
std::vector<std::string> without_nproc(const std::vector<std::string>& arguments);

}  // namespace tessera::cli
