#include "local_ranks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include "tessera/core/error.h"

extern char** environ;

namespace tessera::cli {

namespace {

// A port the kernel hands out as free now; the store on rank 0 binds it a moment later (the
// window in which another program could take it is the same one torchrun's --standalone has).
int free_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  TESSERA_CHECK(fd >= 0, "--nproc: cannot open a socket to find a free port");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  close(fd);
  TESSERA_CHECK(ok, "--nproc: cannot find a free port on 127.0.0.1");
  return ntohs(address.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

}  // namespace

bool inside_distributed_job() {
  const char* world_size = std::getenv("WORLD_SIZE");
  return world_size != nullptr && *world_size != '\0';
}

std::vector<std::string> without_nproc(const std::vector<std::string>& arguments) {
  std::vector<std::string> out;
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (arguments[i] == "--nproc") {
      ++i;  // and its value
      continue;
    }
    if (arguments[i].starts_with("--nproc=")) continue;
    out.push_back(arguments[i]);
  }
  return out;
}

void add_nproc_option(CLI::App& command, int& nproc) {
  command
      .add_option("--nproc", nproc,
                  "train data-parallel as this many processes on this machine (each the "
                  "config's batch_size); under torchrun leave it out")
      ->check(CLI::Range(1, 1024));
}

bool ran_as_local_ranks(int nproc, const std::vector<std::string>& arguments,
                        double distributed_timeout_seconds) {
  if (nproc <= 1) return false;
  const int status =
      run_local_ranks(nproc, without_nproc(arguments), distributed_timeout_seconds + 30);
  if (status != 0) std::exit(status);
  return true;
}

int run_local_ranks(int nproc, const std::vector<std::string>& arguments, double grace_seconds) {
  TESSERA_CHECK(nproc >= 1, "--nproc must be >= 1, got {}", nproc);
  TESSERA_CHECK(!inside_distributed_job(),
                "--nproc {}: this command already runs as a rank of a job (WORLD_SIZE is set); "
                "leave out --nproc under torchrun",
                nproc);
  const std::string program = "/proc/self/exe";
  const int port = free_loopback_port();
  std::vector<std::string> inherited;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    const std::string entry = *variable;
    // The ranks' own values below replace any left in this environment (getenv reads the first).
    const bool ours = entry.starts_with("RANK=") || entry.starts_with("LOCAL_RANK=") ||
                      entry.starts_with("WORLD_SIZE=") || entry.starts_with("LOCAL_WORLD_SIZE=") ||
                      entry.starts_with("MASTER_ADDR=") || entry.starts_with("MASTER_PORT=");
    if (!ours) inherited.push_back(entry);
  }

  std::map<pid_t, int> ranks;  // pid -> rank
  for (int rank = 0; rank < nproc; ++rank) {
    std::vector<std::string> environment = inherited;
    environment.push_back("RANK=" + std::to_string(rank));
    environment.push_back("LOCAL_RANK=" + std::to_string(rank));
    environment.push_back("WORLD_SIZE=" + std::to_string(nproc));
    environment.push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
    environment.push_back("MASTER_ADDR=127.0.0.1");
    environment.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> envp, argv;
    for (auto& entry : environment) envp.push_back(entry.data());
    envp.push_back(nullptr);
    std::vector<std::string> command{"tessera"};
    command.insert(command.end(), arguments.begin(), arguments.end());
    for (auto& argument : command) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int error =
        posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), envp.data());
    if (error != 0) {
      for (const auto& [started, r] : ranks) kill(started, SIGKILL);
      TESSERA_FAIL("--nproc: starting rank {} failed: {}", rank, std::strerror(error));
    }
    ranks[pid] = rank;
  }

  std::optional<int> first_failure;
  // After the first failure: when the ranks still running are killed.
  bool killing = false;
  std::chrono::steady_clock::time_point kill_at = std::chrono::steady_clock::now();
  std::vector<std::string> failures;
  while (!ranks.empty()) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0 && ranks.contains(pid)) {
      const int rank = ranks[pid];
      ranks.erase(pid);
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok) {
        failures.push_back(fmt::format("rank {} {}", rank, describe(status)));
        if (!first_failure) {
          first_failure = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          killing = true;
          kill_at = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000));
        }
      }
      continue;
    }
    if (killing && std::chrono::steady_clock::now() > kill_at) {
      for (const auto& [running, rank] : ranks) {
        std::fprintf(
            stderr, "tessera: rank %d still running after another rank failed; killing it\n", rank);
        kill(running, SIGKILL);
      }
      killing = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!first_failure) return 0;
  std::fprintf(stderr, "tessera: --nproc %d: %s\n", nproc,
               fmt::format("{}", fmt::join(failures, "; ")).c_str());
  return *first_failure == 0 ? 1 : *first_failure;
}

}  // namespace tessera::cli
