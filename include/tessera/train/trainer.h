#pragma once
// The training loop: optimizer, learning-rate schedule, gradient accumulation and clipping, EMA,
// bf16 autocast, seeded data order, atomic checkpoints with bit-identical resume, a stop on a
// non-finite loss, JSONL metrics and a progress bar; data-parallel over several processes when
// started by torchrun or `tessera train --nproc N` (Note [Data-parallel training]).
//
// output_dir receives:
//   config.json          the TrainerConfig (written at the start), or what set_config_json() gave
//   checkpoint.safetensors  the whole training state, every checkpoint_every steps and at exit
//                        (see Note [Training checkpoints])
//   metrics.jsonl        one JSON object per log interval: step, loss, the task's loss terms,
//                        lr, grad_norm, examples_per_second, steps_per_second, elapsed_seconds;
//                        in a job of several processes also ranks and
//                        all_reduce_wait_seconds_per_step (a resumed run first drops the lines
//                        after its checkpoint's step)
//   weights.safetensors  at the end: the parameters and buffers with the task's metadata;
//   weights_ema.safetensors  the same with the EMA parameters, when EMA is enabled
//
// Note [Seeded data order]
// Batches are drawn without replacement from one permutation per epoch; epoch e's permutation is
// randperm(N) from a CPU generator seeded with derive_seed(derive_seed(seed, 0), e). Micro-batch m
// (counted over the whole run, m = step·accumulation_steps + a) is positions
// [k·B, (k+1)·B) of epoch m / K's permutation, k = m mod K, K = ⌊N / B⌋ (the last partial batch of
// an epoch is dropped). The order is thus a function of (seed, step) alone: resuming needs no
// data-loader state, and any step's batch can be recomputed. The task's own generator is seeded
// with derive_seed(seed, 1) and its state is checkpointed.
//
// Note [Training checkpoints]
// One safetensors file, written atomically (temporary file, fsync, rename: see Note [Atomic
// writes]), so a crash mid-save leaves the previous checkpoint intact. Tensors:
//   param/<name>, buffer/<name>, ema/<name>, optim/<parameter>.<state>,
//   rng/task, rng/cpu (LibTorch's default CPU generator), rng/cuda (when CUDA is initialised);
//   in a job of several processes also rng/ranks/task, rng/ranks/cpu and distributed/bucket_order
//   (Note [Data-parallel training])
// Metadata: tessera.format, tessera.step, tessera.ema_updates, tessera.trainer_config (JSON),
// tessera.world_size, and
// the task's metadata under its own keys. Resuming restores all of it, so N steps, a restart, and
// N more steps give the same bits as 2N steps straight (on the same machine, thread count and
// LibTorch build: floating-point reductions are not associative).
//
// Note [Data-parallel training]
// When the environment names a job of W > 1 processes (distributed/distributed_environment.h),
// the trainer meets the other ranks (distributed/process_group.h) and trains data-parallel:
//   - at the start every rank must hold the same TrainerConfig, parameter names and shapes, data
//     set size and task metadata (else every rank stops, naming the ones that differ), and rank
//     0's parameters and buffers are broadcast, so that all ranks start from the same weights;
//   - batch_size stays per rank: a micro-batch of the job is G = W·batch_size examples, positions
//     [k·G, (k+1)·G) of the epoch's permutation of Note [Seeded data order] (K = ⌊N / G⌋), and
//     rank r takes [k·G + r·B, k·G + (r+1)·B): every example once per epoch across the ranks, and
//     with W = 1 the order above;
//   - rank r draws from its own task generator, derive_seed(derive_seed(seed, 1), r) for r > 0
//     (rank 0 keeps the one-process stream);
//   - the last micro-batch's gradients are averaged over the ranks while the backward pass runs
//     (Note [Gradient buckets]); clipping, the optimizer and the EMA then see identical gradients
//     on every rank, so the weights stay identical, and the clipped norm is the global one;
//   - buffers (batch-norm statistics, EMA codebooks, usage counters) are updated by each rank from
//     its own shard and then replaced by rank 0's after every step, as PyTorch DDP's
//     broadcast_buffers does: the ranks stay identical, and the buffers see rank 0's shard only;
//   - the logged loss and terms are the means over the ranks; only rank 0 writes files
//     (config.json, metrics.jsonl, checkpoints, weights); the checkpoint also holds every rank's
//     generator states (rng/ranks/task, rng/ranks/cpu), the gradient buckets' order
//     (distributed/bucket_order: the order of each element's sum over the ranks depends on it)
//     and tessera.world_size, and a resume with another number of ranks is refused (the data
//     order and streams depend on it);
//   - a rank that fails reports why before it exits, and the others stop within
//     distributed.timeout_seconds naming it (Note [Naming the failed rank]).
// A run of W ranks with batch_size B thus takes the steps of one process with batch_size W·B,
// up to the order of floating-point sums, when the task's loss draws nothing at random and
// updates no buffers.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "tessera/core/config.h"
#include "tessera/distributed/gradient_all_reduce.h"
#include "tessera/distributed/process_group.h"
#include "tessera/train/ema.h"
#include "tessera/train/lr_schedule.h"
#include "tessera/train/optimizer.h"
#include "tessera/train/training_task.h"

namespace tessera {

struct TrainerConfig {
  OptimizerConfig optimizer{};  ///< the optimizer
  LrScheduleConfig lr_schedule{};  ///< the learning-rate schedule
  EmaConfig ema{};  ///< the weights' moving average
  int64_t steps = 1000;  ///< optimizer steps
  int64_t batch_size = 64;  ///< examples per micro-batch
  /// Micro-batches of batch_size per optimizer step; the loss of each is scaled by 1/accumulation
  /// so the update equals that of one batch of batch_size·accumulation_steps (for a mean loss).
  int64_t accumulation_steps = 1;
  double grad_clip_norm = 0.0;  ///< clip the global gradient norm to this; 0: no clipping
  bool bf16_autocast = false;   ///< run the task's loss under bf16 autocast (see nn/autocast.h)
  int64_t log_every = 50;  ///< steps between log lines
  int64_t checkpoint_every = 500;  ///< 0: only at exit
  std::string output_dir = "out/train";  ///< checkpoints and weights go here
  uint64_t seed = 0;  ///< data order and the task's draws
  /// Continue from output_dir/checkpoint.safetensors when it exists.
  bool resume = true;
  int64_t threads = 0;  ///< intra-op threads; 0 keeps LibTorch's default
  bool progress_bar = true;  ///< show a progress bar
  DistributedConfig distributed{};  ///< a run of several processes (Note [Data-parallel training])

  template <class Visitor>
  void visit(Visitor& v) {
    v("optimizer", optimizer);
    v("lr_schedule", lr_schedule);
    v("ema", ema);
    v("steps", steps);
    v("batch_size", batch_size);
    v("accumulation_steps", accumulation_steps);
    v("grad_clip_norm", grad_clip_norm);
    v("bf16_autocast", bf16_autocast);
    v("log_every", log_every);
    v("checkpoint_every", checkpoint_every);
    v("output_dir", output_dir);
    v("seed", seed);
    v("resume", resume);
    v("threads", threads);
    v("progress_bar", progress_bar);
    v("distributed", distributed);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< The training loop's settings.

struct TrainResult {
  int64_t start_step = 0;  ///< > 0 when resumed
  int64_t steps = 0;       ///< the step reached
  double seconds = 0;      ///< wall time of the loop
  double final_loss = 0;   ///< mean loss of the last log interval
  std::filesystem::path checkpoint{};  ///< the last checkpoint written
  std::filesystem::path weights{};  ///< empty unless the run reached config.steps
  /// False on the ranks > 0 of a data-parallel job, which write no files (rank 0 does).
  bool writes_files = true;
  /// Seconds the last micro-batches waited for the gradients' all-reduce (0 in one process).
  double all_reduce_wait_seconds = 0;
};  ///< What Trainer::run did.

/// The epoch permutation of Note [Seeded data order].
at::Tensor epoch_permutation(uint64_t seed, int64_t epoch, int64_t dataset_size);

class Trainer {
 public:
  /// Validates the config, sets the thread count and builds the optimizer and EMA over the task's
  /// parameters; in a job of several processes, meets the other ranks and checks that they agree
  /// (Note [Data-parallel training]). The task must outlive the trainer.
  Trainer(TrainerConfig config, TrainingTask& task);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains until config.steps, or until `stop_at` steps (a checkpoint is written there, so a later
  /// run resumes from it). Resumes first when config.resume and a checkpoint exists. Throws
  /// tessera::Error on a non-finite loss or gradient norm, without writing a checkpoint: the last
  /// good one stays on disk.
  TrainResult run(std::optional<int64_t> stop_at = std::nullopt);

  /// Writes / reads the whole training state (see Note [Training checkpoints]).
  void save_checkpoint(const std::filesystem::path& path);
  void load_checkpoint(const std::filesystem::path& path);  ///< See save_checkpoint().

  int64_t step() const { return step_; }  ///< Optimizer steps done.
  const TrainerConfig& config() const { return config_; }  ///< The configuration it was built from.
  int64_t rank() const { return group_ ? group_->rank() : 0; }  ///< This process's rank.
  /// The number of processes training together (1 without a job).
  int64_t world_size() const { return group_ ? group_->world_size() : 1; }
  /// Whether this process writes the run's files (rank 0); front ends write theirs only then.
  bool writes_files() const { return rank() == 0; }
  /// The job's process group, or null in a run of one process.
  const std::shared_ptr<ProcessGroup>& process_group() const { return group_; }
  Optimizer& optimizer() { return *optimizer_; }  ///< The optimizer.
  /// Null when EMA is disabled.
  const ExponentialMovingAverage* ema() const { return ema_.get(); }
  std::filesystem::path checkpoint_path() const;  ///< output_dir/checkpoint.safetensors.
  /// What run() writes as output_dir/config.json instead of the TrainerConfig: a front end whose
  /// own config describes the whole run (train_tokenizer's TokenizerTrainConfig) records that, so
  /// the file can be handed back as its --config. The checkpoint's metadata keeps the
  /// TrainerConfig either way.
  void set_config_json(nlohmann::json config) { config_json_ = std::move(config); }

 private:
  at::Tensor micro_batch_indices(int64_t micro_batch);
  void check_ranks_agree();
  void broadcast_from_rank_zero(const std::map<std::string, at::Tensor>& tensors);
  TrainResult run_steps(std::optional<int64_t> stop_at);

  TrainerConfig config_;
  std::optional<nlohmann::json> config_json_;
  TrainingTask& task_;
  std::map<std::string, at::Tensor> parameters_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<ExponentialMovingAverage> ema_;
  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<GradientAllReduce> gradients_;
  at::Generator task_generator_;
  int64_t step_ = 0;
  int64_t cached_epoch_ = -1;
  at::Tensor cached_permutation_;
};  ///< The training loop: batches, optimizer, schedule, EMA, checkpoints and logs.

}  // namespace tessera
