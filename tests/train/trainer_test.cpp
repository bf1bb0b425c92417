// The Trainer: bit-identical resume, stop on a non-finite loss with the last good checkpoint kept,
// atomic checkpoints, data order, gradient accumulation, metrics.

#include "tessera/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/io/safetensors.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("tessera_pipeline_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

// Linear regression on fixed data, with noise from the task's generator and from LibTorch's
// global generator (to check that both streams are restored on resume), and a buffer.
class RegressionTask : public TrainingTask {
 public:
  explicit RegressionTask(int64_t examples = 64) {
    at::Generator g = make_cpu_generator(11);
    x_ = at::randn({examples, 4}, g);
    y_ = x_.matmul(at::randn({4, 3}, g)) + 0.5;
    w_ = (at::randn({4, 3}, g) * 0.1).requires_grad_(true);
    b_ = at::zeros({3}).requires_grad_(true);
    seen_ = at::zeros({examples}, at::kFloat);
  }
  std::map<std::string, at::Tensor> parameters() override { return {{"w", w_}, {"b", b_}}; }
  std::map<std::string, at::Tensor> buffers() override {
    std::map<std::string, at::Tensor> out{{"seen", seen_}};
    if (bad_buffer) out["bad"] = at::zeros({2}, at::kComplexFloat);  // safetensors refuses it
    return out;
  }
  int64_t dataset_size() const override { return x_.size(0); }
  TrainingLoss loss(const at::Tensor& indices, at::Generator& generator) override {
    ++calls;
    seen_.index_add_(0, indices, at::ones({indices.size(0)}));
    last_indices.push_back(indices.clone());
    const at::Tensor x = x_.index_select(0, indices);
    const at::Tensor noise = at::randn({indices.size(0), 3}, generator) * 0.01 +
                             at::rand({1}) * 0.001;  // the second draw uses the global generator
    at::Tensor loss = (x.matmul(w_) + b_ - y_.index_select(0, indices) - noise).square().mean();
    if (calls == nan_at_call) loss = loss * std::numeric_limits<double>::quiet_NaN();
    return {loss, {{"half", 0.5 * loss.item<double>()}}};
  }
  std::map<std::string, std::string> metadata() const override { return {{"task", "regression"}}; }

  at::Tensor x_, y_, w_, b_, seen_;
  int64_t calls = 0;
  int64_t nan_at_call = -1;
  bool bad_buffer = false;
  std::vector<at::Tensor> last_indices;
};

TrainerConfig base_config(const fs::path& dir, OptimizerKind kind = OptimizerKind::adamw) {
  TrainerConfig c;
  c.optimizer.kind = kind;
  c.optimizer.learning_rate = kind == OptimizerKind::lion ? 3e-3 : 3e-2;
  c.optimizer.weight_decay = 0.1;
  c.lr_schedule = {.kind = LrScheduleKind::cosine, .warmup_steps = 2, .min_ratio = 0.1};
  c.ema = {.enabled = true, .decay = 0.9, .warmup = true};
  c.steps = 6;
  c.batch_size = 8;
  c.accumulation_steps = 2;
  c.grad_clip_norm = 1.0;
  c.log_every = 2;
  c.checkpoint_every = 3;
  c.output_dir = dir.string();
  c.seed = 5;
  c.progress_bar = false;
  return c;
}

void reset_global_generator(uint64_t seed = 123) {
  at::Generator g = at::globalContext().defaultGenerator(at::kCPU);
  g.set_current_seed(seed);
}

void expect_bit_equal(const std::map<std::string, at::Tensor>& a,
                      const std::map<std::string, at::Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.contains(name)) << what << " " << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << what << " " << name << " differs";
  }
}

std::vector<nlohmann::json> read_metrics(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

class ResumeTest : public ::testing::TestWithParam<OptimizerKind> {};

TEST_P(ResumeTest, StopAndResumeIsBitIdenticalToStraightRun) {
  const OptimizerKind kind = GetParam();
  const fs::path straight_dir = fresh_dir("straight"), resumed_dir = fresh_dir("resumed");
  std::map<std::string, at::Tensor> straight_params, straight_ema, straight_optim, straight_buf;
  {
    reset_global_generator();
    RegressionTask task;
    Trainer trainer(base_config(straight_dir, kind), task);
    const TrainResult r = trainer.run();
    EXPECT_EQ(r.steps, 6);
    EXPECT_EQ(r.start_step, 0);
    for (const auto& [n, t] : task.parameters()) straight_params[n] = t.detach().clone();
    for (const auto& [n, t] : trainer.ema()->averages()) straight_ema[n] = t.clone();
    for (const auto& [n, t] : trainer.optimizer().state_dict()) straight_optim[n] = t.clone();
    straight_buf["seen"] = task.seen_.clone();
  }
  {
    reset_global_generator();
    RegressionTask task;
    Trainer trainer(base_config(resumed_dir, kind), task);
    const TrainResult r = trainer.run(/*stop_at=*/3);
    EXPECT_EQ(r.steps, 3);
    EXPECT_TRUE(r.weights.empty());  // not finished: no weights file yet
    // Disturb everything the checkpoint must restore.
    reset_global_generator(999);
  }
  RegressionTask task;  // fresh model, fresh generators
  Trainer trainer(base_config(resumed_dir, kind), task);
  const TrainResult r = trainer.run();
  EXPECT_EQ(r.start_step, 3);
  EXPECT_EQ(r.steps, 6);
  EXPECT_TRUE(fs::exists(resumed_dir / "weights.safetensors"));
  EXPECT_TRUE(fs::exists(resumed_dir / "weights_ema.safetensors"));
  std::map<std::string, at::Tensor> params, ema, optim;
  for (const auto& [n, t] : task.parameters()) params[n] = t.detach();
  expect_bit_equal(straight_params, params, "parameters");
  expect_bit_equal(straight_ema, trainer.ema()->averages(), "EMA");
  expect_bit_equal(straight_optim, trainer.optimizer().state_dict(), "optimizer state");
  expect_bit_equal(straight_buf, {{"seen", task.seen_}}, "buffers");
  // The EMA really moved away from the weights (warm-up decay), and training did something.
  EXPECT_FALSE(at::equal(trainer.ema()->averages().at("w"), task.w_));
  fs::remove_all(straight_dir);
  fs::remove_all(resumed_dir);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, ResumeTest,
                         ::testing::Values(OptimizerKind::adamw, OptimizerKind::lion));

TEST(Trainer, NonFiniteLossStopsAndKeepsLastGoodCheckpoint) {
  const fs::path dir = fresh_dir("nan");
  TrainerConfig config = base_config(dir);
  config.steps = 10;
  config.accumulation_steps = 1;
  config.checkpoint_every = 2;
  config.log_every = 1;
  RegressionTask task;
  task.nan_at_call = 6;  // the loss of step 5 (0-based) is NaN; checkpoints at steps 2 and 4
  Trainer trainer(config, task);
  try {
    trainer.run();
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("loss is nan at step 5"), std::string::npos) << message;
    EXPECT_NE(message.find("last good checkpoint"), std::string::npos) << message;
    EXPECT_NE(message.find("step 4"), std::string::npos) << message;
  }
  const fs::path checkpoint = dir / "checkpoint.safetensors";
  ASSERT_TRUE(fs::exists(checkpoint));
  EXPECT_FALSE(fs::exists(dir / "weights.safetensors"));
  const SafetensorsFile file = SafetensorsFile::open(checkpoint);
  EXPECT_EQ(file.metadata().at("tessera.step"), "4");
  // Loadable into a fresh trainer, and it continues from step 4 (to the end: no NaN this time).
  RegressionTask fresh;
  Trainer resumed(config, fresh);
  resumed.load_checkpoint(checkpoint);
  EXPECT_EQ(resumed.step(), 4);
  EXPECT_TRUE(at::equal(fresh.w_, file.tensor("param/w")));
  EXPECT_EQ(resumed.run().steps, 10);
  // Step 5 was logged before the NaN and again after the resume from step 4: it appears once.
  std::vector<int64_t> logged;
  for (const auto& line : read_metrics(dir)) logged.push_back(line["step"].get<int64_t>());
  EXPECT_EQ(logged, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  fs::remove_all(dir);
}

TEST(Trainer, NonFiniteLossBeforeAnyCheckpointSaysSo) {
  const fs::path dir = fresh_dir("nan_early");
  TrainerConfig config = base_config(dir);
  config.accumulation_steps = 1;
  RegressionTask task;
  task.nan_at_call = 1;
  Trainer trainer(config, task);
  try {
    trainer.run();
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint was written"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "checkpoint.safetensors"));
  fs::remove_all(dir);
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(Trainer, InterruptedCheckpointLeavesPreviousIntact) {
  const fs::path dir = fresh_dir("atomic");
  TrainerConfig config = base_config(dir);
  RegressionTask task;
  Trainer trainer(config, task);
  trainer.run(3);
  const fs::path checkpoint = dir / "checkpoint.safetensors";
  const std::string before = read_bytes(checkpoint);
  ASSERT_FALSE(before.empty());
  {
    // A crash mid-save: half a file written to the temporary path, never renamed.
    AtomicFileWriter writer(checkpoint);
    writer.write(before.substr(0, before.size() / 2));
  }
  EXPECT_EQ(read_bytes(checkpoint), before);
  // An exception while saving (a tensor safetensors cannot store) at the next checkpoint.
  task.bad_buffer = true;
  config.resume = false;
  Trainer failing(config, task);
  EXPECT_THROW(failing.save_checkpoint(checkpoint), Error);
  EXPECT_EQ(read_bytes(checkpoint), before);
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos)
        << "temporary file left behind: " << entry.path();
  }
  task.bad_buffer = false;
  RegressionTask fresh;
  Trainer loader(config, fresh);
  loader.load_checkpoint(checkpoint);
  EXPECT_EQ(loader.step(), 3);
  fs::remove_all(dir);
}

TEST(Trainer, DataOrderIsSeededEpochPermutations) {
  const at::Tensor p0 = epoch_permutation(5, 0, 64), p1 = epoch_permutation(5, 1, 64);
  EXPECT_TRUE(at::equal(std::get<0>(p0.sort()), at::arange(64)));
  EXPECT_FALSE(at::equal(p0, p1));
  EXPECT_TRUE(at::equal(p0, epoch_permutation(5, 0, 64)));
  EXPECT_FALSE(at::equal(p0, epoch_permutation(6, 0, 64)));
  // One epoch of batches (64 / 8 = 8 micro-batches) visits each example once, in p0's order.
  const fs::path dir = fresh_dir("order");
  TrainerConfig config = base_config(dir);
  config.steps = 4;  // 4 steps x 2 micro-batches
  RegressionTask task;
  Trainer(config, task).run();
  ASSERT_EQ(task.last_indices.size(), 8u);
  EXPECT_TRUE(at::equal(at::cat(task.last_indices), p0));
  EXPECT_THROW(epoch_permutation(5, -1, 64), Error);
  fs::remove_all(dir);
}

TEST(Trainer, AccumulationEqualsOneLargeBatch) {
  // Two micro-batches of 8 are positions [16k, 16k + 16) of the epoch permutation, the same
  // examples as one batch of 16; for a mean loss the accumulated gradient is that of the large
  // batch. The task's small noise is drawn differently in the two runs, hence the tolerance; a
  // missing 1/accumulation scaling would double the norm.
  const fs::path a_dir = fresh_dir("accumulate"), b_dir = fresh_dir("large");
  TrainerConfig a = base_config(a_dir);
  a.ema.enabled = false;
  a.grad_clip_norm = 0;
  a.steps = 4;
  a.log_every = 1;
  TrainerConfig b = a;
  b.output_dir = b_dir.string();
  b.accumulation_steps = 1;
  b.batch_size = 16;
  RegressionTask ta, tb;
  Trainer(a, ta).run();
  Trainer(b, tb).run();
  const auto ma = read_metrics(a_dir), mb = read_metrics(b_dir);
  ASSERT_EQ(ma.size(), 4u);
  ASSERT_EQ(mb.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(ma[i]["grad_norm"].get<double>(), mb[i]["grad_norm"].get<double>(),
                0.01 * mb[i]["grad_norm"].get<double>())
        << i;
    EXPECT_NEAR(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>(),
                0.01 * mb[i]["loss"].get<double>())
        << i;
  }
  EXPECT_TRUE(at::allclose(ta.w_, tb.w_, 0, 1e-3)) << (ta.w_ - tb.w_).abs().max().item<double>();
  fs::remove_all(a_dir);
  fs::remove_all(b_dir);
}

TEST(Trainer, WritesMetricsLines) {
  const fs::path dir = fresh_dir("metrics");
  TrainerConfig config = base_config(dir);
  config.steps = 6;
  config.log_every = 2;
  RegressionTask task;
  Trainer(config, task).run();
  const auto lines = read_metrics(dir);
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["step"].get<int64_t>(), 2 * static_cast<int64_t>(i + 1));
    for (const char* key : {"loss", "half", "lr", "grad_norm", "examples_per_second",
                            "steps_per_second", "elapsed_seconds"}) {
      EXPECT_TRUE(lines[i].contains(key)) << key;
    }
    EXPECT_NEAR(lines[i]["half"].get<double>(), 0.5 * lines[i]["loss"].get<double>(), 1e-9);
  }
  // lr of the last step (step index 5 of 6, warm-up 2, floor 0.1): cosine at (5 − 2) / 4.
  const double expected =
      3e-2 * (0.1 + 0.9 * 0.5 * (1 + std::cos(3.14159265358979323846 * 3.0 / 4.0)));
  EXPECT_NEAR(lines[2]["lr"].get<double>(), expected, 1e-12);
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  EXPECT_EQ(load_config<TrainerConfig>(dir / "config.json").steps, 6);
  fs::remove_all(dir);
}

// A front end records its own config as config.json (train_tokenizer does); the checkpoint keeps
// the TrainerConfig.
TEST(Trainer, ConfigJsonCanBeTheCallersConfig) {
  const fs::path dir = fresh_dir("config_json");
  TrainerConfig config = base_config(dir);
  config.steps = 2;
  RegressionTask task;
  Trainer trainer(config, task);
  trainer.set_config_json({{"front_end", "test"}, {"steps", 2}});
  trainer.run();
  std::ifstream in(dir / "config.json");
  const auto written = nlohmann::json::parse(in);
  EXPECT_EQ(written, (nlohmann::json{{"front_end", "test"}, {"steps", 2}}));
  const auto metadata = SafetensorsFile::open(dir / "checkpoint.safetensors").metadata();
  EXPECT_EQ(nlohmann::json::parse(metadata.at("tessera.trainer_config"))["steps"], 2);
  fs::remove_all(dir);
}

TEST(Trainer, RejectsBadConfigsAndTasks) {
  const fs::path dir = fresh_dir("bad");
  RegressionTask task(4);
  EXPECT_THROW({ Trainer t(base_config(dir), task); }, Error);  // 4 examples < batch 8
  RegressionTask ok;
  TrainerConfig c = base_config(dir);
  c.accumulation_steps = 0;
  EXPECT_THROW({ Trainer t(c, ok); }, Error);
  EXPECT_THROW(config_from_json<TrainerConfig>(nlohmann::json{{"step", 5}}), Error);
  fs::remove_all(dir);
}

// Note [bf16 tolerance of the regression task]
// Under bf16 autocast the task's only low-precision operation is x·w (4 terms): autocast rounds x
// and w to bf16 (8 significant bits: unit roundoff u = 2^-8 ≈ 0.0039), sums the products in
// float32 and rounds the result to bf16; backward, the matmul's gradients are formed the same way.
// The rest (+ b − y − noise, the square, the mean, the optimizer) stays float32. So
//   loss: with S = Σ|x||w| per output, |Δ(x·w)| ≤ 3u·S, and for L = mean(r²),
//     |ΔL|/L ≤ 2·mean(|r|·3u·S)/mean(r²) ≤ 6u·RMS(S)/RMS(r) (Cauchy–Schwarz). Here RMS(r) ≈ 1.6
//     (L ≈ 2.5, and 6 steps lower it little) and RMS(S) ≤ 0.83 even if every |w| grew by the most
//     6 steps of lr 0.03 allow: at most about 3u;
//   weights: AdamW's step is lr·m̂/(√v̂ + ε), of magnitude about lr and relative error about that
//     of the gradient, 3u, as no gradient component is near zero (the loss stays of order 1). Over
//     N = 6 steps the runs drift apart by at most about N·lr·2·3u; allowed: N·lr·8u ≈ 0.0056, a
//     fifth of one step. That drift moves the loss by |∂L/∂w|·Δw ≲ 2·RMS(r)·|x|·Δw: about 2u.
// Hence 8u = 2^-5 per step for the loss. A loss in bf16 throughout would still pass; a lost
// scaling or term (tens of percent) would not, and an autocast that did nothing fails the
// inequality check below. The test prints the measured differences (far below: rounding errors
// are not all of one sign).
TEST(Trainer, Bf16AutocastMatchesFloat32WithinBf16Rounding) {
  constexpr double kUnitRoundoff = 1.0 / 256.0;  // bf16: 2^-8
  const fs::path fp32_dir = fresh_dir("fp32"), bf16_dir = fresh_dir("bf16");
  TrainerConfig fp32 = base_config(fp32_dir);
  fp32.log_every = 1;
  TrainerConfig bf16 = fp32;
  bf16.output_dir = bf16_dir.string();
  bf16.bf16_autocast = true;
  RegressionTask fp32_task, bf16_task;
  reset_global_generator();  // the task draws from it: the same noise in both runs
  Trainer(fp32, fp32_task).run();
  reset_global_generator();
  EXPECT_EQ(Trainer(bf16, bf16_task).run().steps, fp32.steps);

  const auto a = read_metrics(fp32_dir), b = read_metrics(bf16_dir);
  ASSERT_EQ(a.size(), static_cast<size_t>(fp32.steps));
  ASSERT_EQ(b.size(), a.size());
  double largest_loss_error = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double fp32_loss = a[i]["loss"].get<double>(), bf16_loss = b[i]["loss"].get<double>();
    largest_loss_error = std::max(largest_loss_error, std::abs(bf16_loss / fp32_loss - 1));
    EXPECT_NEAR(bf16_loss, fp32_loss, 8 * kUnitRoundoff * fp32_loss) << "step " << i + 1;
  }
  // Autocast was on: bf16 rounding changed the first loss (an fp32 rerun gives the same bits).
  EXPECT_NE(a[0]["loss"].get<double>(), b[0]["loss"].get<double>());

  const double weight_tolerance =
      static_cast<double>(fp32.steps) * fp32.optimizer.learning_rate * 8 * kUnitRoundoff;
  const double w_error = (bf16_task.w_ - fp32_task.w_).abs().max().item<double>();
  const double b_error = (bf16_task.b_ - fp32_task.b_).abs().max().item<double>();
  EXPECT_LE(w_error, weight_tolerance);
  EXPECT_LE(b_error, weight_tolerance);
  std::printf(
      "bf16 against fp32 over %lld steps: loss %.2e relative (allowed %.2e), weights "
      "%.2e, bias %.2e (allowed %.2e)\n",
      static_cast<long long>(fp32.steps), largest_loss_error, 8 * kUnitRoundoff, w_error, b_error,
      weight_tolerance);
  fs::remove_all(fp32_dir);
  fs::remove_all(bf16_dir);
}

}  // namespace
}  // namespace tessera
