// Data-parallel training over c10d's Gloo on loopback (Note [Data-parallel training]): each test
// starts real processes (tessera_data_parallel_worker, or the tessera command), as torchrun
// would, and checks what a user relies on against a one-process run as the reference: two ranks
// of batch B end where one process of batch 2B ends; the ranks split every epoch; a dead, failing
// or differently configured rank stops the others with an error naming it, within the timeout;
// a resumed job equals an uninterrupted one.
#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/prerequisite.h"
#include "common/source_paths.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/distributed/process_group.h"
#include "tessera/io/safetensors.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path worker() {
  return tessera::testing::binary_dir() / "bin" / "tessera_data_parallel_worker";
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("tessera_dp_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A port the kernel reports free now (what `--nproc` does too), so that suites running in parallel
// never share a store.
int next_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  close(fd);
  return ntohs(address.sin_port);
}

struct Exit {
  int status = -1;     // exit status, 128 + signal when killed
  std::string log;     // stdout and stderr
  double seconds = 0;  // from the start until it was seen to exit (ranks are reaped in order)
};

// Starts `world` processes of `program` with torchrun's variables (none when world is 0: one
// plain process) and waits for all, killing what is left after `limit`.
std::vector<Exit> run_ranks(const fs::path& program, int world,
                            const std::vector<std::vector<std::string>>& arguments_per_rank,
                            const fs::path& logs,
                            std::chrono::seconds limit = std::chrono::seconds(240)) {
  const int ranks = std::max(world, 1);
  const int port = next_port();
  const auto start = Clock::now();
  std::vector<pid_t> pids(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    std::vector<std::string> environment;
    for (char** v = environ; *v != nullptr; ++v) environment.emplace_back(*v);
    if (world > 0) {
      environment.push_back("RANK=" + std::to_string(r));
      environment.push_back("LOCAL_RANK=" + std::to_string(r));
      environment.push_back("WORLD_SIZE=" + std::to_string(world));
      environment.push_back("MASTER_ADDR=127.0.0.1");
      environment.push_back("MASTER_PORT=" + std::to_string(port));
    }
    std::vector<std::string> command{program.string()};
    const auto& args =
        arguments_per_rank[std::min<size_t>(static_cast<size_t>(r), arguments_per_rank.size() - 1)];
    command.insert(command.end(), args.begin(), args.end());
    std::vector<char*> argv, envp;
    for (auto& a : command) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : environment) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string log = (logs / ("rank" + std::to_string(r) + ".log")).string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    EXPECT_EQ(posix_spawn(&pids[static_cast<size_t>(r)], argv[0], &actions, nullptr, argv.data(),
                          envp.data()),
              0);
    posix_spawn_file_actions_destroy(&actions);
  }
  std::vector<Exit> exits(static_cast<size_t>(ranks));
  const auto deadline = Clock::now() + limit;
  for (int r = 0; r < ranks; ++r) {
    int status = 0;
    while (waitpid(pids[static_cast<size_t>(r)], &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        kill(pids[static_cast<size_t>(r)], SIGKILL);
        ADD_FAILURE() << "rank " << r << " still ran after " << limit.count() << " s";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto& e = exits[static_cast<size_t>(r)];
    e.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    e.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::ifstream in(logs / ("rank" + std::to_string(r) + ".log"));
    std::stringstream text;
    text << in.rdbuf();
    e.log = text.str();
  }
  return exits;
}

void skip_without_gloo() {
  if (!tessera::gloo_available()) {
    TESSERA_SKIP_FOR_MISSING("Gloo's headers at configure time (Debian's libgloo-dev)");
  }
}

std::map<std::string, at::Tensor> weights_in(const fs::path& dir) {
  return tessera::SafetensorsFile::open(dir / "weights.safetensors").all();
}

double max_difference(const std::map<std::string, at::Tensor>& a,
                      const std::map<std::string, at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    worst = std::max(worst,
                     (t.to(at::kDouble) - b.at(name).to(at::kDouble)).abs().max().item<double>());
  }
  return worst;
}

// Two ranks of batch `batch` against one process of batch 2·batch, the same steps.
void expect_two_ranks_equal_one_process(const std::string& name, int64_t accumulation) {
  const fs::path two = fresh_dir(name + "_two"), one = fresh_dir(name + "_one");
  const std::string steps = "8", acc = std::to_string(accumulation);
  for (const Exit& e : run_ranks(worker(), 2, {{two.string(), steps, "4", acc}}, two)) {
    ASSERT_EQ(e.status, 0) << e.log;
  }
  const auto single = run_ranks(worker(), 0, {{one.string(), steps, "8", acc}}, one);
  ASSERT_EQ(single[0].status, 0) << single[0].log;
  auto a = weights_in(two), b = weights_in(one);
  // The parameters, not the running-mean buffer: the job's follows rank 0's shard only.
  a.erase("running_mean");
  b.erase("running_mean");
  const double difference = max_difference(a, b);
  std::printf("2 ranks x batch 4 vs 1 process x batch 8, accumulation %lld: max |diff| %.3g\n",
              static_cast<long long>(accumulation), difference);
  EXPECT_LE(difference, 1e-5);
  // The run moved the weights (the comparison is not of two untouched initialisations).
  EXPECT_GT(std::abs(a.at("layer2.bias").item<double>()), 1e-3);
  // The logged loss is the job's mean: the task's "rank" term averages to (0 + 1) / 2.
  std::ifstream metrics(two / "metrics.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(metrics, line));
  const auto j = nlohmann::json::parse(line);
  EXPECT_DOUBLE_EQ(j.at("rank").get<double>(), 0.5);
  EXPECT_EQ(j.at("ranks").get<int64_t>(), 2);
  fs::remove_all(two);
  fs::remove_all(one);
}

TEST(DataParallel, TwoRanksEndWithTheParametersOfOneProcessOnTheGlobalBatch) {
  skip_without_gloo();
  expect_two_ranks_equal_one_process("global_batch", 1);
}

TEST(DataParallel, TwoRanksWithGradientAccumulationEqualOneProcess) {
  skip_without_gloo();
  expect_two_ranks_equal_one_process("accumulation", 2);
}

TEST(DataParallel, EveryRankEndsWithRankZerosBuffers) {
  skip_without_gloo();
  // Each rank updates its running mean from its own shard; after every step rank 0's replaces the
  // others' (DDP's broadcast_buffers), so the files agree, and rank 1's own updates are gone.
  const fs::path dir = fresh_dir("buffers");
  for (const Exit& e : run_ranks(worker(), 2, {{dir.string(), "5", "4", "1"}}, dir)) {
    ASSERT_EQ(e.status, 0) << e.log;
  }
  auto read = [&](int rank) {
    std::ifstream in(dir / ("buffer_rank" + std::to_string(rank) + ".txt"));
    std::vector<double> values;
    double v = 0;
    while (in >> v) values.push_back(v);
    return values;
  };
  const auto rank0 = read(0), rank1 = read(1);
  ASSERT_EQ(rank0.size(), 6u);
  EXPECT_EQ(rank0, rank1);
  // Moved from rank 0's start (all zeros) by five updates: the broadcast carries real updates.
  EXPECT_GT(std::abs(rank0[0]), 1e-3);
  fs::remove_all(dir);
}

TEST(DataParallel, EachRankSeesADisjointShardAndTogetherTheEpoch) {
  skip_without_gloo();
  // 48 examples, 2 ranks x batch 4: an epoch is 6 steps of 8 examples.
  const fs::path dir = fresh_dir("shards");
  for (const Exit& e :
       run_ranks(worker(), 2, {{dir.string(), "6", "4", "1", "--log-indices"}}, dir)) {
    ASSERT_EQ(e.status, 0) << e.log;
  }
  std::vector<std::multiset<int64_t>> seen(2);
  for (int r = 0; r < 2; ++r) {
    std::ifstream in(dir / ("indices_rank" + std::to_string(r) + ".txt"));
    int64_t index = 0;
    while (in >> index) seen[static_cast<size_t>(r)].insert(index);
    EXPECT_EQ(seen[static_cast<size_t>(r)].size(), 24u) << "rank " << r;
  }
  std::multiset<int64_t> all = seen[0];
  all.insert(seen[1].begin(), seen[1].end());
  std::multiset<int64_t> epoch;
  for (int64_t i = 0; i < 48; ++i) epoch.insert(i);
  EXPECT_EQ(all, epoch) << "the two ranks' examples are not the epoch, each once";
  fs::remove_all(dir);
}

TEST(DataParallel, AKilledRankStopsTheOthersWithinTheTimeoutNamingIt) {
  skip_without_gloo();
  const fs::path dir = fresh_dir("killed");
  const auto exits = run_ranks(
      worker(), 2,
      {{dir.string(), "50", "4", "1", "--timeout", "5", "--fail", "kill", "--fail-step", "3"}},
      dir);
  EXPECT_EQ(exits[1].status, 128 + SIGKILL);
  EXPECT_NE(exits[0].status, 0);
  EXPECT_NE(exits[0].log.find("rank 1 stopped answering"), std::string::npos) << exits[0].log;
  std::printf("a killed rank: the other stopped after %.1f s (timeout 5 s)\n", exits[0].seconds);
  EXPECT_LT(exits[0].seconds, 30.0) << "the survivor did not stop within the timeout";
  fs::remove_all(dir);
}

TEST(DataParallel, AHungRankStopsTheOthersAfterTheTimeout) {
  skip_without_gloo();
  const fs::path dir = fresh_dir("hung");
  const auto exits = run_ranks(
      worker(), 2,
      {{dir.string(), "50", "4", "1", "--timeout", "4", "--fail", "hang", "--fail-step", "2"}}, dir,
      std::chrono::seconds(90));
  EXPECT_NE(exits[0].status, 0);
  EXPECT_NE(exits[0].log.find("rank 1 stopped answering"), std::string::npos) << exits[0].log;
  // Rank 0 stopped after the 4 s timeout while rank 1 was still silent (it exits at 25 s).
  std::printf("a hung rank: the other stopped after %.1f s (timeout 4 s)\n", exits[0].seconds);
  EXPECT_LT(exits[0].seconds, 20.0);
  EXPECT_EQ(exits[1].status, 9);
  fs::remove_all(dir);
}

TEST(DataParallel, AFailingRankIsNamedWithItsReason) {
  skip_without_gloo();
  const fs::path dir = fresh_dir("throws");
  const auto exits = run_ranks(
      worker(), 2,
      {{dir.string(), "50", "4", "1", "--timeout", "20", "--fail", "throw", "--fail-step", "2"}},
      dir);
  EXPECT_EQ(exits[1].status, 1);
  EXPECT_NE(exits[1].log.find("injected failure"), std::string::npos) << exits[1].log;
  EXPECT_NE(exits[0].status, 0);
  EXPECT_NE(exits[0].log.find("rank 1 stopped: injected failure"), std::string::npos)
      << exits[0].log;
  fs::remove_all(dir);
}

TEST(DataParallel, ARankWithAnotherConfigIsRefusedAtStart) {
  skip_without_gloo();
  const fs::path dir = fresh_dir("config");
  const auto exits =
      run_ranks(worker(), 2,
                {{dir.string(), "4", "4", "1", "--timeout", "20"},
                 {dir.string(), "4", "4", "1", "--timeout", "20", "--learning-rate", "0.5"}},
                dir);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(exits[static_cast<size_t>(r)].status, 1);
    EXPECT_NE(exits[static_cast<size_t>(r)].log.find("disagree on their trainer config: rank 1"),
              std::string::npos)
        << exits[static_cast<size_t>(r)].log;
  }
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl")) << "a refused job trained";
  fs::remove_all(dir);
}

TEST(DataParallel, ResumingTwoRanksGivesTheParametersOfAnUninterruptedRun) {
  skip_without_gloo();
  const fs::path straight = fresh_dir("straight"), resumed = fresh_dir("resumed");
  for (const Exit& e : run_ranks(worker(), 2, {{straight.string(), "8", "4", "2"}}, straight)) {
    ASSERT_EQ(e.status, 0) << e.log;
  }
  for (const Exit& e :
       run_ranks(worker(), 2, {{resumed.string(), "8", "4", "2", "--stop-at", "3"}}, resumed)) {
    ASSERT_EQ(e.status, 0) << e.log;
  }
  ASSERT_FALSE(fs::exists(resumed / "weights.safetensors"));
  for (const Exit& e : run_ranks(worker(), 2, {{resumed.string(), "8", "4", "2"}}, resumed)) {
    ASSERT_EQ(e.status, 0) << e.log;
  }
  EXPECT_EQ(max_difference(weights_in(straight), weights_in(resumed)), 0.0);
  // A resume with another number of ranks is refused (the data order depends on it).
  const auto single = run_ranks(worker(), 0, {{resumed.string(), "9", "8", "2"}}, resumed);
  EXPECT_EQ(single[0].status, 1);
  EXPECT_NE(single[0].log.find("written by a run of 2 process(es), and this run has 1"),
            std::string::npos)
      << single[0].log;
  fs::remove_all(straight);
  fs::remove_all(resumed);
}

TEST(DataParallel, TesseraTrainTokenizerWithNprocTwoRunsEndToEnd) {
  skip_without_gloo();
  if (!fs::exists(tessera::default_fashion_mnist_directory() / "train-images-idx3-ubyte.gz")) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << tessera::default_fashion_mnist_directory());
  }
  const fs::path dir = fresh_dir("nproc");
  // The shipped patch-free VQ-VAE recipe, cut to a few steps on 64 images.
  nlohmann::json config = nlohmann::json::parse(std::ifstream(
      tessera::testing::source_dir() / "configs/tokenizer/vq_vae_fashion_mnist.json"));
  config["steps"] = 2;
  config["batch_size"] = 8;
  config["log_every"] = 1;
  config["data"]["train_images"] = 64;
  config["data"]["eval_images"] = 16;
  std::ofstream(dir / "config.json") << config.dump();
  const auto exits = run_ranks(tessera::testing::binary_dir() / "bin" / "tessera", 0,
                               {{"train-tokenizer", "--config", (dir / "config.json").string(),
                                 "--out", (dir / "out").string(), "--nproc", "2"}},
                               dir);
  ASSERT_EQ(exits[0].status, 0) << exits[0].log;
  EXPECT_TRUE(fs::exists(dir / "out" / "tokenizer.safetensors"));
  std::ifstream metrics(dir / "out" / "metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  const auto j = nlohmann::json::parse(last);
  EXPECT_EQ(j.at("step").get<int64_t>(), 2);
  EXPECT_EQ(j.at("ranks").get<int64_t>(), 2);
  fs::remove_all(dir);
}

TEST(DataParallel, TesseraTrainWithNprocTwoTrainsAGeneratorEndToEnd) {
  skip_without_gloo();
  if (!fs::exists(tessera::default_fashion_mnist_directory() / "train-images-idx3-ubyte.gz")) {
    TESSERA_SKIP_FOR_MISSING("Fashion-MNIST at " << tessera::default_fashion_mnist_directory());
  }
  const fs::path dir = fresh_dir("nproc_generator");
  // The shipped MaskGIT recipe on 256 images for 2 steps, with a short timeout.
  nlohmann::json config = nlohmann::json::parse(std::ifstream(
      tessera::testing::source_dir() / "configs/generator/maskgit_fashion_mnist.json"));
  config["tokenizer"] =
      (tessera::testing::source_dir() / config["tokenizer"].get<std::string>()).string();
  config["data"]["train_images"] = 256;
  config["trainer"]["steps"] = 2;
  config["trainer"]["batch_size"] = 8;
  config["trainer"]["log_every"] = 1;
  config["trainer"]["checkpoint_every"] = 0;
  config["trainer"]["progress_bar"] = false;
  std::ofstream(dir / "config.json") << config.dump();
  const auto exits = run_ranks(tessera::testing::binary_dir() / "bin" / "tessera", 0,
                               {{"train", "--config", (dir / "config.json").string(), "--out",
                                 (dir / "out").string(), "--nproc", "2", "--dist-timeout", "60",
                                 "--threads", "1"}},
                               dir);
  ASSERT_EQ(exits[0].status, 0) << exits[0].log;
  EXPECT_TRUE(fs::exists(dir / "out" / "generator.safetensors"));
  // Rank 0 alone reports (once).
  const std::string report = "trained steps 0..2";
  const size_t first = exits[0].log.find(report);
  EXPECT_NE(first, std::string::npos) << exits[0].log;
  EXPECT_EQ(exits[0].log.find(report, first + 1), std::string::npos) << exits[0].log;
  std::ifstream metrics(dir / "out" / "metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  EXPECT_EQ(nlohmann::json::parse(last).at("ranks").get<int64_t>(), 2);
  fs::remove_all(dir);
}

}  // namespace
