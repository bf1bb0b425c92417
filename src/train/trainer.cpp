#include "tessera/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/logging.h"
#include "tessera/core/progress.h"
#include "tessera/core/rng.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/autocast.h"
#include "tessera/train/gradient_clipping.h"

namespace tessera {

namespace {

constexpr const char* kCheckpointFormat = "tessera-training-checkpoint-1";
constexpr uint64_t kDataOrderStream = 0;
constexpr uint64_t kTaskStream = 1;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::map<std::string, at::Tensor> with_prefix(const std::string& prefix,
                                              const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : tensors) out[prefix + name] = t.detach();
  return out;
}

std::map<std::string, at::Tensor> strip_prefix(const std::string& prefix,
                                               const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : tensors) {
    if (name.starts_with(prefix)) out[name.substr(prefix.size())] = t;
  }
  return out;
}

// Copies `source` into the task's tensors of the same names (strict: every name on both sides).
void copy_named(const std::map<std::string, at::Tensor>& destination,
                const std::map<std::string, at::Tensor>& source, const std::string& what,
                const std::filesystem::path& path) {
  for (const auto& [name, d] : destination) {
    auto it = source.find(name);
    TESSERA_CHECK(it != source.end(), "checkpoint {}: missing {} '{}'", path.string(), what, name);
    TESSERA_CHECK(it->second.sizes() == d.sizes(),
                  "checkpoint {}: {} '{}' has shape {}, the model's has {}", path.string(), what,
                  name, it->second.sizes(), d.sizes());
  }
  for (const auto& [name, s] : source) {
    TESSERA_CHECK(destination.contains(name), "checkpoint {}: unexpected {} '{}'", path.string(),
                  what, name);
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, d] : destination) d.copy_(source.at(name));
}

// A run that stopped after its last checkpoint (a crash, a NaN) logged steps that the resumed run
// repeats: keep only the lines up to the step it resumes from, so every step appears once.
void drop_metrics_after(const std::filesystem::path& path, int64_t step) {
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  bool dropped = false;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer() ||
        j["step"].get<int64_t>() > step) {
      dropped = true;
      continue;
    }
    kept += line + '\n';
  }
  in.close();
  if (dropped) write_file_atomically(path, kept);
}

bool cuda_generator_available() { return at::hasCUDA() && at::globalContext().hasCUDA(); }

}  // namespace

void TrainerConfig::validate() const {
  optimizer.validate();
  lr_schedule.validate();
  ema.validate();
  TESSERA_CHECK(steps >= 0, "steps must be >= 0, got {}", steps);
  TESSERA_CHECK(batch_size > 0, "batch_size must be positive, got {}", batch_size);
  TESSERA_CHECK(accumulation_steps > 0, "accumulation_steps must be positive, got {}",
                accumulation_steps);
  TESSERA_CHECK(grad_clip_norm >= 0, "grad_clip_norm must be >= 0, got {}", grad_clip_norm);
  TESSERA_CHECK(log_every > 0, "log_every must be positive, got {}", log_every);
  TESSERA_CHECK(checkpoint_every >= 0, "checkpoint_every must be >= 0, got {}", checkpoint_every);
  TESSERA_CHECK(!output_dir.empty(), "output_dir must not be empty");
  TESSERA_CHECK(threads >= 0, "threads must be >= 0, got {}", threads);
}

at::Tensor epoch_permutation(uint64_t seed, int64_t epoch, int64_t dataset_size) {
  TESSERA_CHECK(epoch >= 0, "epoch_permutation: epoch must be >= 0, got {}", epoch);
  TESSERA_CHECK(dataset_size > 0, "epoch_permutation: dataset_size must be positive, got {}",
                dataset_size);
  at::Generator generator = make_cpu_generator(
      derive_seed(derive_seed(seed, kDataOrderStream), static_cast<uint64_t>(epoch)));
  return at::randperm(dataset_size, generator, at::TensorOptions().dtype(at::kLong));
}

Trainer::Trainer(TrainerConfig config, TrainingTask& task)
    : config_(std::move(config)),
      task_(task),
      task_generator_(make_cpu_generator(derive_seed(config_.seed, kTaskStream))) {
  config_.validate();
  if (config_.threads > 0) at::set_num_threads(static_cast<int>(config_.threads));
  parameters_ = task_.parameters();
  TESSERA_CHECK(!parameters_.empty(), "Trainer: the task has no parameters to train");
  for (const auto& [name, p] : parameters_) {
    TESSERA_CHECK(p.is_floating_point(), "Trainer: parameter '{}' is {}, not floating point", name,
                  p.scalar_type());
    TESSERA_CHECK(p.requires_grad(), "Trainer: parameter '{}' does not require grad", name);
  }
  const DistributedEnvironment environment = DistributedEnvironment::from_variables();
  if (environment.distributed()) {
    group_ = ProcessGroup::connect(environment, config_.distributed, task_.device());
    if (group_->rank() > 0) {
      task_generator_ = make_cpu_generator(derive_seed(derive_seed(config_.seed, kTaskStream),
                                                       static_cast<uint64_t>(group_->rank())));
    }
    check_ranks_agree();
  }
  const int64_t n = task_.dataset_size();
  TESSERA_CHECK(n >= config_.batch_size * world_size(),
                "Trainer: the dataset has {} examples, fewer than batch_size {} × {} rank(s)", n,
                config_.batch_size, world_size());
  optimizer_ = make_optimizer(config_.optimizer);
  if (group_) {
    // Every rank starts from rank 0's weights (Note [Data-parallel training]).
    broadcast_from_rank_zero(parameters_);
    broadcast_from_rank_zero(task_.buffers());
    gradients_ = std::make_unique<GradientAllReduce>(group_, parameters_,
                                                     config_.distributed.bucket_megabytes);
  }
  if (config_.ema.enabled) {
    ema_ = std::make_unique<ExponentialMovingAverage>(parameters_, config_.ema);
  }
}

void Trainer::broadcast_from_rank_zero(const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& [name, t] : tensors) {
    at::Tensor data = t.detach();  // the same storage, outside autograd
    group_->broadcast(data, 0);
  }
}

void Trainer::check_ranks_agree() {
  group_->require_agreement("trainer config", config_to_json(config_).dump());
  std::string shapes;
  for (const auto& [name, p] : parameters_) {
    shapes += fmt::format("{} {} {}; ", name, p.sizes(), p.scalar_type());
  }
  for (const auto& [name, b] : task_.buffers()) {
    shapes += fmt::format("buffer {} {} {}; ", name, b.sizes(), b.scalar_type());
  }
  group_->require_agreement("parameters", shapes);
  group_->require_agreement("data set size", std::to_string(task_.dataset_size()));
  nlohmann::json metadata(task_.metadata());
  group_->require_agreement("model metadata", metadata.dump());
}

Trainer::~Trainer() = default;

std::filesystem::path Trainer::checkpoint_path() const {
  return std::filesystem::path(config_.output_dir) / "checkpoint.safetensors";
}

at::Tensor Trainer::micro_batch_indices(int64_t micro_batch) {
  // Note [Data-parallel training]: the job's micro-batch is G = W·B examples, this rank's share
  // the r-th B of them.
  const int64_t n = task_.dataset_size();
  const int64_t job_batch = config_.batch_size * world_size();
  const int64_t per_epoch = n / job_batch;
  const int64_t epoch = micro_batch / per_epoch, k = micro_batch % per_epoch;
  if (epoch != cached_epoch_) {
    cached_permutation_ = epoch_permutation(config_.seed, epoch, n);
    cached_epoch_ = epoch;
  }
  const int64_t begin = k * job_batch + rank() * config_.batch_size;
  return cached_permutation_.slice(0, begin, begin + config_.batch_size);
}

void Trainer::save_checkpoint(const std::filesystem::path& path) {
  std::map<std::string, at::Tensor> tensors = with_prefix("param/", parameters_);
  tensors.merge(with_prefix("buffer/", task_.buffers()));
  if (ema_) tensors.merge(with_prefix("ema/", ema_->averages()));
  tensors.merge(with_prefix("optim/", optimizer_->state_dict()));
  tensors["rng/task"] = task_generator_.get_state();
  tensors["rng/cpu"] = at::globalContext().defaultGenerator(at::kCPU).get_state();
  if (cuda_generator_available()) {
    tensors["rng/cuda"] = at::globalContext().defaultGenerator(at::kCUDA).get_state();
  }
  if (group_) {
    // Every rank's streams, so that each resumes its own (a collective: every rank saves).
    auto gathered = [&](const at::Tensor& state) {
      return group_->all_gather(state.to(task_.device())).cpu();
    };
    tensors["rng/ranks/task"] = gathered(tensors["rng/task"]);
    tensors["rng/ranks/cpu"] = gathered(tensors["rng/cpu"]);
    const std::vector<int64_t> order = gradients_->rebuilt_order();
    if (!order.empty()) tensors["distributed/bucket_order"] = at::tensor(order, at::kLong);
    if (!writes_files()) return;
  }
  std::map<std::string, std::string> metadata = task_.metadata();
  metadata["tessera.world_size"] = std::to_string(world_size());
  metadata["tessera.format"] = kCheckpointFormat;
  metadata["tessera.step"] = std::to_string(step_);
  metadata["tessera.ema_updates"] = std::to_string(ema_ ? ema_->updates() : 0);
  metadata["tessera.trainer_config"] = config_to_json(config_).dump();
  save_safetensors(path, tensors, metadata);
}

void Trainer::load_checkpoint(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto& metadata = file.metadata();
  auto meta = [&](const std::string& key) {
    auto it = metadata.find(key);
    TESSERA_CHECK(it != metadata.end(), "checkpoint {}: no '{}' in its metadata (not a training "
                  "checkpoint?)", path.string(), key);
    return it->second;
  };
  TESSERA_CHECK(meta("tessera.format") == kCheckpointFormat,
                "checkpoint {}: format '{}', expected '{}'", path.string(), meta("tessera.format"),
                kCheckpointFormat);
  const int64_t step = std::stoll(meta("tessera.step"));
  const auto saved_world = metadata.find("tessera.world_size");
  const int64_t saved_world_size =
      saved_world == metadata.end() ? 1 : std::stoll(saved_world->second);
  TESSERA_CHECK(saved_world_size == world_size(),
                "checkpoint {}: written by a run of {} process(es), and this run has {}: the data "
                "order and the random streams depend on the number of ranks, so resume with {} "
                "(or start afresh with --fresh)",
                path.string(), saved_world_size, world_size(), saved_world_size);
  const int64_t ema_updates = std::stoll(meta("tessera.ema_updates"));
  const std::map<std::string, at::Tensor> all = file.all();

  copy_named(parameters_, strip_prefix("param/", all), "parameter", path);
  copy_named(task_.buffers(), strip_prefix("buffer/", all), "buffer", path);
  const auto ema = strip_prefix("ema/", all);
  if (ema_) {
    TESSERA_CHECK(!ema.empty(), "checkpoint {}: EMA is enabled but the checkpoint has none",
                  path.string());
    ema_->load(ema, ema_updates);
  }
  optimizer_->load_state_dict(strip_prefix("optim/", all), parameters_);
  auto state = [&](const std::string& key) {
    auto it = all.find(key);
    TESSERA_CHECK(it != all.end(), "checkpoint {}: missing '{}'", path.string(), key);
    return it->second.clone();  // set_state wants its own bytes
  };
  // defaultGenerator() hands out a const handle; a copy shares the same generator.
  at::Generator cpu = at::globalContext().defaultGenerator(at::kCPU);
  if (group_) {
    task_generator_.set_state(state("rng/ranks/task")[rank()].clone());
    cpu.set_state(state("rng/ranks/cpu")[rank()].clone());
    if (all.contains("distributed/bucket_order")) {
      const at::Tensor order = all.at("distributed/bucket_order").contiguous();
      gradients_->use_order(std::vector<int64_t>(order.data_ptr<int64_t>(),
                                                 order.data_ptr<int64_t>() + order.numel()));
    }
  } else {
    task_generator_.set_state(state("rng/task"));
    cpu.set_state(state("rng/cpu"));
  }
  if (all.contains("rng/cuda") && cuda_generator_available()) {
    at::Generator cuda = at::globalContext().defaultGenerator(at::kCUDA);
    cuda.set_state(state("rng/cuda"));
  }
  step_ = step;
}

TrainResult Trainer::run(std::optional<int64_t> stop_at) {
  if (!group_) return run_steps(stop_at);
  try {
    return run_steps(stop_at);
  } catch (const std::exception& e) {
    // Note [Naming the failed rank]: the other ranks' errors will name this one and its reason.
    group_->report_failure(e.what());
    throw;
  }
}

TrainResult Trainer::run_steps(std::optional<int64_t> stop_at) {
  const int64_t end_step = std::min(config_.steps, stop_at.value_or(config_.steps));
  TESSERA_CHECK(end_step >= 0, "Trainer::run: stop_at must be >= 0, got {}", end_step);
  const std::filesystem::path out_dir = config_.output_dir;
  std::filesystem::create_directories(out_dir);
  // A run killed while saving left its temporary file behind (Note [Atomic writes]).
  if (writes_files()) remove_stale_temporary_files(out_dir);
  const std::filesystem::path checkpoint = checkpoint_path();
  if (config_.resume && std::filesystem::exists(checkpoint)) {
    load_checkpoint(checkpoint);
    TESSERA_LOG_INFO("resumed from {} at step {}", checkpoint.string(), step_);
  }
  TrainResult result;
  result.start_step = step_;
  result.checkpoint = checkpoint;
  result.writes_files = writes_files();
  int64_t last_good_checkpoint = std::filesystem::exists(checkpoint) ? step_ : -1;
  std::ofstream metrics;
  if (writes_files()) {
    write_json_file(out_dir / "config.json",
                    config_json_ ? *config_json_ : config_to_json(config_));
    drop_metrics_after(out_dir / "metrics.jsonl", step_);
    metrics.open(out_dir / "metrics.jsonl", std::ios::app);
    TESSERA_CHECK(metrics.good(), "Trainer: cannot open {} for writing",
                  (out_dir / "metrics.jsonl").string());
  }

  const auto start = std::chrono::steady_clock::now();
  std::optional<ProgressBar> progress;
  if (config_.progress_bar && end_step > step_ && writes_files()) {
    progress.emplace(end_step - step_, "train");
  }
  task_.set_training(true);
  const double accumulation = static_cast<double>(config_.accumulation_steps);
  double loss_sum = 0, grad_norm_sum = 0, all_reduce_wait_sum = 0;
  int64_t interval_steps = 0;
  std::vector<std::pair<std::string, double>> term_sums;
  auto interval_start = std::chrono::steady_clock::now();

  while (step_ < end_step) {
    const double lr =
        config_.optimizer.learning_rate * lr_factor(config_.lr_schedule, step_, config_.steps);
    for (const auto& [name, p] : parameters_) {
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
    }
    double step_loss = 0;
    std::vector<double> step_terms;
    for (int64_t a = 0; a < config_.accumulation_steps; ++a) {
      const at::Tensor indices = micro_batch_indices(step_ * config_.accumulation_steps + a);
      TrainingLoss out;
      {
        std::optional<AutocastGuard> autocast;
        if (config_.bf16_autocast) autocast.emplace(task_.device().type());
        out = task_.loss(indices, task_generator_);
      }
      TESSERA_CHECK(out.loss.defined() && out.loss.numel() == 1,
                    "Trainer: the task's loss must be a scalar tensor");
      const double value = out.loss.item<double>();
      if (!std::isfinite(value)) {
        task_.set_training(false);
        TESSERA_FAIL(
            "training stopped: the loss is {} at step {} (micro-batch {} of {}); nothing was "
            "saved after it, {} (lower the learning rate, enable grad_clip_norm or bf16 off?)",
            value, step_, a + 1, config_.accumulation_steps,
            last_good_checkpoint >= 0
                ? fmt::format("the last good checkpoint is {} at step {}", checkpoint.string(),
                              last_good_checkpoint)
                : std::string("and no checkpoint was written yet"));
      }
      // The step's last backward pass all-reduces the gradients as they arrive.
      if (gradients_ && a + 1 == config_.accumulation_steps) gradients_->arm();
      (config_.accumulation_steps == 1 ? out.loss : out.loss / accumulation).backward();
      step_loss += value / accumulation;
      if (step_terms.empty()) step_terms.assign(out.terms.size(), 0.0);
      for (size_t i = 0; i < out.terms.size() && i < step_terms.size(); ++i) {
        step_terms[i] += out.terms[i].second / accumulation;
      }
      if (term_sums.empty()) {
        for (const auto& [name, v] : out.terms) term_sums.emplace_back(name, 0.0);
      }
    }
    if (gradients_) {
      gradients_->finish();
      all_reduce_wait_sum += gradients_->take_wait_seconds();
    }
    const double grad_norm = clip_grad_norm(parameters_, config_.grad_clip_norm);
    if (!std::isfinite(grad_norm)) {
      task_.set_training(false);
      TESSERA_FAIL("training stopped: the gradient norm is {} at step {} (loss {}); {}", grad_norm,
                   step_, step_loss,
                   last_good_checkpoint >= 0
                       ? fmt::format("the last good checkpoint is {} at step {}",
                                     checkpoint.string(), last_good_checkpoint)
                       : std::string("no checkpoint was written yet"));
    }
    optimizer_->step(parameters_, lr);
    if (ema_) ema_->update(parameters_);
    // Buffers (batch-norm statistics, EMA codebooks) follow rank 0's updates, as under PyTorch
    // DDP's broadcast_buffers (Note [Data-parallel training]).
    if (group_) broadcast_from_rank_zero(task_.buffers());
    ++step_;
    if (progress) progress->advance();

    loss_sum += step_loss;
    grad_norm_sum += grad_norm;
    for (size_t i = 0; i < step_terms.size() && i < term_sums.size(); ++i) {
      term_sums[i].second += step_terms[i];
    }
    ++interval_steps;
    if (step_ % config_.log_every == 0 || step_ == end_step) {
      if (group_) {
        // The logged loss and terms are the job's: the ranks' interval sums, averaged.
        std::vector<double> sums{loss_sum};
        for (const auto& [name, sum] : term_sums) sums.push_back(sum);
        at::Tensor summed = at::tensor(sums, at::kDouble).to(task_.device());
        group_->all_reduce_sum(summed);
        summed = summed.cpu() / static_cast<double>(world_size());
        loss_sum = summed[0].item<double>();
        for (size_t i = 0; i < term_sums.size(); ++i) {
          term_sums[i].second = summed[static_cast<int64_t>(i) + 1].item<double>();
        }
      }
      const double n = static_cast<double>(interval_steps);
      const double seconds = std::max(1e-9, seconds_since(interval_start));
      nlohmann::json line;
      line["step"] = step_;
      line["loss"] = loss_sum / n;
      for (const auto& [name, sum] : term_sums) line[name] = sum / n;
      line["lr"] = lr;
      line["grad_norm"] = grad_norm_sum / n;
      line["steps_per_second"] = n / seconds;
      line["examples_per_second"] =
          n * static_cast<double>(config_.batch_size * config_.accumulation_steps * world_size()) /
          seconds;
      line["elapsed_seconds"] = seconds_since(start);
      if (group_) {
        line["ranks"] = world_size();
        line["all_reduce_wait_seconds_per_step"] = all_reduce_wait_sum / n;
      }
      if (writes_files()) {
        metrics << line.dump() << '\n';
        metrics.flush();
      }
      TESSERA_LOG_DEBUG("train {}", line.dump());
      result.final_loss = loss_sum / n;
      result.all_reduce_wait_seconds += all_reduce_wait_sum;
      loss_sum = grad_norm_sum = all_reduce_wait_sum = 0;
      for (auto& [name, sum] : term_sums) sum = 0;
      interval_steps = 0;
      interval_start = std::chrono::steady_clock::now();
    }
    if (config_.checkpoint_every > 0 && step_ % config_.checkpoint_every == 0 &&
        step_ < end_step) {
      save_checkpoint(checkpoint);
      last_good_checkpoint = step_;
    }
  }
  if (progress) progress->finish();
  task_.set_training(false);
  result.seconds = seconds_since(start);
  result.steps = step_;
  save_checkpoint(checkpoint);

  if (step_ >= config_.steps && writes_files()) {
    // The weights alone, for inference: parameters and buffers under their own names.
    std::map<std::string, at::Tensor> weights;
    for (const auto& [name, p] : parameters_) weights[name] = p.detach();
    for (const auto& [name, b] : task_.buffers()) weights[name] = b.detach();
    std::map<std::string, std::string> metadata = task_.metadata();
    metadata["tessera.step"] = std::to_string(step_);
    result.weights = out_dir / "weights.safetensors";
    save_safetensors(result.weights, weights, metadata);
    if (ema_) {
      for (const auto& [name, average] : ema_->averages()) weights[name] = average;
      save_safetensors(out_dir / "weights_ema.safetensors", weights, metadata);
    }
  }
  return result;
}

}  // namespace tessera
