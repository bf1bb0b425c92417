// One rank of the data-parallel tests (tests/distributed/data_parallel_test.cpp starts several):
// trains a small regression network with the Trainer, as torchrun's variables in the environment
// say, and can fail on purpose at a given step.
//
//   tessera_data_parallel_worker OUT STEPS BATCH ACCUMULATION [--stop-at K] [--timeout S]
//       [--learning-rate X] [--fail MODE --fail-rank R --fail-step K] [--log-indices]
// MODE: kill (SIGKILL: no report, like an OOM kill), throw (a tessera::Error, reported), hang
// (silent for 25 s, then exits).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/distributed/distributed_environment.h"
#include "tessera/train/trainer.h"

namespace {

// y = sin(x·v) on 48 fixed points; a 6-16-1 tanh network with mean squared error. The loss draws
// nothing at random, so W ranks of batch B take the steps of one process of batch W·B.
class RegressionTask : public tessera::TrainingTask {
 public:
  RegressionTask(std::string indices_log, int64_t rank)
      : indices_log_(std::move(indices_log)), rank_(rank) {
    at::Generator data = tessera::make_cpu_generator(123);
    inputs_ = at::randn({48, 6}, data, at::kFloat);
    targets_ = at::sin(inputs_.matmul(at::randn({6, 1}, data, at::kFloat)));
    // Rank-dependent initial weights: the trainer must broadcast rank 0's.
    at::Generator init = tessera::make_cpu_generator(7 + static_cast<uint64_t>(rank));
    parameters_["layer1.weight"] = (at::randn({16, 6}, init) * 0.4).requires_grad_(true);
    parameters_["layer1.bias"] = at::zeros({16}).requires_grad_(true);
    parameters_["layer2.weight"] = (at::randn({1, 16}, init) * 0.25).requires_grad_(true);
    parameters_["layer2.bias"] = at::zeros({1}).requires_grad_(true);
    // Never used by the loss: its .grad must stay undefined on every rank.
    parameters_["unused"] = at::ones({3}).requires_grad_(true);
    // A running mean of the inputs each rank updates from its own shard (as batch norm does),
    // started differently on each rank.
    buffers_["running_mean"] = at::full({6}, static_cast<float>(rank));
  }

  std::map<std::string, at::Tensor> buffers() override { return buffers_; }
  /// Writes this rank's buffer, so the test can compare the ranks'.
  void write_buffer(const std::string& path) {
    std::ofstream out(path);
    out.precision(9);
    const at::Tensor b = buffers_["running_mean"].contiguous();
    for (int64_t i = 0; i < b.numel(); ++i) out << b.data_ptr<float>()[i] << ' ';
  }

  std::map<std::string, at::Tensor> parameters() override { return parameters_; }
  int64_t dataset_size() const override { return inputs_.size(0); }

  tessera::TrainingLoss loss(const at::Tensor& indices, at::Generator& /*generator*/) override {
    ++calls_;
    if (fail_mode_ != "none" && calls_ == fail_call_) {
      if (fail_mode_ == "kill") std::raise(SIGKILL);
      if (fail_mode_ == "hang") {
        // Long past the others' timeout; then gone without a word, so the test need not kill it.
        std::this_thread::sleep_for(std::chrono::seconds(25));
        std::_Exit(9);
      }
      TESSERA_FAIL("injected failure at micro-batch {}", calls_);
    }
    if (!indices_log_.empty()) {
      std::ofstream log(indices_log_, std::ios::app);
      const auto* p = indices.data_ptr<int64_t>();
      for (int64_t i = 0; i < indices.numel(); ++i) log << p[i] << ' ';
      log << '\n';
    }
    const at::Tensor x = inputs_.index_select(0, indices);
    {
      at::NoGradGuard no_grad;
      buffers_["running_mean"].mul_(0.9).add_(x.mean(0), 0.1);
    }
    const at::Tensor y = targets_.index_select(0, indices);
    const at::Tensor hidden =
        at::tanh(at::linear(x, parameters_["layer1.weight"], parameters_["layer1.bias"]));
    const at::Tensor prediction =
        at::linear(hidden, parameters_["layer2.weight"], parameters_["layer2.bias"]);
    const at::Tensor loss = (prediction - y).pow(2).mean();
    return {loss, {{"rank", static_cast<double>(rank_)}}};
  }

  void fail_at(std::string mode, int64_t call) {
    fail_mode_ = std::move(mode);
    fail_call_ = call;
  }

 private:
  std::string indices_log_;
  int64_t rank_;
  at::Tensor inputs_, targets_;
  std::map<std::string, at::Tensor> parameters_;
  std::map<std::string, at::Tensor> buffers_;
  std::string fail_mode_ = "none";
  int64_t fail_call_ = -1;
  int64_t calls_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    TESSERA_CHECK(argc >= 5, "usage: {} OUT STEPS BATCH ACCUMULATION [options]", argv[0]);
    const auto environment = tessera::DistributedEnvironment::from_variables();
    tessera::TrainerConfig config;
    config.output_dir = argv[1];
    config.steps = std::stoll(argv[2]);
    config.batch_size = std::stoll(argv[3]);
    config.accumulation_steps = std::stoll(argv[4]);
    config.optimizer.learning_rate = 2e-2;
    config.grad_clip_norm = 1.0;
    config.ema.enabled = true;
    config.ema.decay = 0.9;
    config.log_every = 1;
    config.checkpoint_every = 0;
    config.progress_bar = false;
    config.threads = 1;
    config.seed = 5;
    std::optional<int64_t> stop_at;
    std::string fail_mode = "none";
    int64_t fail_rank = 1, fail_step = -1;
    bool log_indices = false;
    for (int i = 5; i < argc; ++i) {
      const std::string option = argv[i];
      auto value = [&] {
        TESSERA_CHECK(i + 1 < argc, "{} needs a value", option);
        return std::string(argv[++i]);
      };
      if (option == "--stop-at")
        stop_at = std::stoll(value());
      else if (option == "--timeout")
        config.distributed.timeout_seconds = std::stod(value());
      else if (option == "--learning-rate")
        config.optimizer.learning_rate = std::stod(value());
      else if (option == "--fail")
        fail_mode = value();
      else if (option == "--fail-rank")
        fail_rank = std::stoll(value());
      else if (option == "--fail-step")
        fail_step = std::stoll(value());
      else if (option == "--log-indices")
        log_indices = true;
      else
        TESSERA_FAIL("unknown option {}", option);
    }
    RegressionTask task(log_indices ? config.output_dir + "/indices_rank" +
                                          std::to_string(environment.rank) + ".txt"
                                    : std::string(),
                        environment.rank);
    if (environment.rank == fail_rank && fail_step >= 0) {
      task.fail_at(fail_mode, fail_step * config.accumulation_steps + 1);
    }
    tessera::Trainer trainer(config, task);
    trainer.run(stop_at);
    task.write_buffer(config.output_dir + "/buffer_rank" + std::to_string(environment.rank) +
                      ".txt");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker error: %s\n", e.what());
    return 1;
  }
}
