#pragma once
// Helpers shared by the schedule tests: Fashion-MNIST tokens, tiny models, a scripted head that
// records what a schedule asks of it, and a bounded training loop.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "tessera/data/fashion_mnist.h"
#include "tessera/core/rng.h"
#include "tessera/head/head.h"
#include "tessera/nn/backbone.h"
#include "tessera/schedule/schedule.h"
#include "tessera/tokenizer/patch_tokenizer.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera::schedule_test {

inline constexpr int64_t kGreyLevels = 16;

// Fashion-MNIST images in [−1, 1], [N, 1, 28, 28]: the first `count` of a split.
inline LabeledImages fashion_subset(DatasetSplit split, int64_t count) {
  LabeledImages data = load_fashion_mnist(split, {.pixels = PixelRange::minus_one_to_one});
  data.images = data.images.slice(0, 0, count).contiguous();
  data.labels = data.labels.slice(0, 0, count).contiguous();
  return data;
}

// Discrete tokens written for the tests (no trained tokenizer): 4x4 average pooling to a 7x7 grid,
// then 16 grey levels: id = clamp(⌊(v + 1)/2 · 16⌋, 0, 15). int64 [N, 49].
inline at::Tensor grey_level_ids(const at::Tensor& images) {
  const at::Tensor pooled = at::avg_pool2d(images.to(at::kFloat), {4, 4});  // [N, 1, 7, 7]
  const at::Tensor level = at::floor((pooled + 1.0) * 0.5 * kGreyLevels).clamp(0, kGreyLevels - 1);
  return level.to(at::kLong).reshape({images.size(0), -1});
}

// Continuous tokens: 4x4 patches (PatchTokenizer), [N, 49, 16].
inline at::Tensor patch_vectors(const at::Tensor& images) {
  PatchTokenizer tokenizer(PatchTokenizerConfig{1, 4});
  return tokenizer.encode(images.to(at::kFloat)).scales[0];
}

// Per sample, the positions of the token sequence shuffled (a fresh permutation per sample): the
// control data set of the learning tests, same tokens, no spatial structure.
inline at::Tensor shuffle_positions(const at::Tensor& tokens, uint64_t seed) {
  at::Generator gen = make_cpu_generator(seed);
  const int64_t n = tokens.size(0), L = tokens.size(1);
  const at::Tensor perm = at::argsort(at::empty({n, L}).uniform_(0, 1, gen), /*dim=*/int64_t{1},
                                      /*descending=*/false);
  if (tokens.dim() == 2) return tokens.gather(1, perm);
  return tokens.gather(1, perm.unsqueeze(-1).expand({n, L, tokens.size(2)}));
}

// --- a scripted head ----------------------------------------------------------------------------

// A head whose draws a test dictates: every call is recorded, values are `value_of(step)` at every
// row, the log-probability of row r (position r % T of its sample) is `log_p[position]`.
class ScriptedHead final : public Head {
 public:
  struct Call {
    int64_t rows = 0;
    GenerationProgress progress{};
    at::Tensor hidden{};
  };

  // Discrete (vocab > 0) or continuous (channels > 0).
  ScriptedHead(int64_t width, int64_t vocab, int64_t channels)
      : Head(std::make_shared<torch::nn::Module>()),
        width_(width),
        vocab_(vocab),
        channels_(channels) {}

  HeadConfig config() const override {
    HeadConfig c;
    c.kind = vocab_ > 0 ? HeadKind::discrete : HeadKind::flow_matching;
    c.discrete.width = width_;
    c.discrete.vocab_size = vocab_ > 0 ? vocab_ : 2;
    return c;
  }
  int64_t hidden_width() const override { return width_; }
  int64_t vocab_size() const override { return vocab_; }
  int64_t token_channels() const override { return channels_; }
  // Records the targets and weights; the loss is the mean of the hidden rows (so it has a graph).
  HeadLoss loss(const at::Tensor& hidden, const at::Tensor& targets,
                const HeadLossOptions& options) override {
    loss_hidden.push_back(hidden.detach().clone());
    loss_targets.push_back(targets.clone());
    loss_weights.push_back(options.weights.defined() ? options.weights.clone() : at::Tensor());
    return {hidden.mean(), {}};
  }
  HeadSample sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                         const HeadSamplingOptions&, SampleRngs& rngs,
                         const HeadStep& step) override {
    calls.push_back({hidden.size(0), step.progress, hidden.clone()});
    const int64_t rows = guidance.doubles_batch() ? hidden.size(0) / 2 : hidden.size(0);
    const int64_t per_sample = rows / rngs.size();
    HeadSample out;
    const double value = static_cast<double>(step.progress.step);
    if (vocab_ > 0) {
      out.values = at::full({rows}, static_cast<int64_t>(step.progress.step) % vocab_, at::kLong);
      at::Tensor lp = log_p.defined() ? log_p : at::zeros({per_sample});
      out.log_probabilities = lp.repeat({rngs.size()}).to(at::kFloat);
      out.probabilities = out.log_probabilities.exp();
    } else {
      out.values = at::full({rows, channels_}, value, at::kFloat);
    }
    return out;
  }

  at::Tensor log_p{};  // [positions per sample]
  std::vector<Call> calls;
  std::vector<at::Tensor> loss_hidden, loss_targets, loss_weights;

 private:
  int64_t width_, vocab_, channels_;
};

// --- training -----------------------------------------------------------------------------------

struct TrainResult {
  double eval_loss = 0;    // mean loss over the evaluation batches, fixed draws
  double final_train = 0;  // mean training loss over the last 20 steps
};

// Adam on backbone + head (+ decoder) for `steps` steps of `batch` rows drawn in order from
// `tokens`/`labels`, then the mean loss over `eval_tokens` in batches, with a fixed generator and
// the models in evaluation mode.
inline TrainResult train_and_evaluate(Schedule& schedule, Backbone& backbone, Head& head,
                                      const at::Tensor& tokens, const at::Tensor& labels,
                                      const at::Tensor& eval_tokens, const at::Tensor& eval_labels,
                                      const std::vector<TokenGridSize>& grids, int64_t steps,
                                      int64_t batch, double lr, uint64_t seed,
                                      Backbone* decoder = nullptr) {
  std::vector<at::Tensor> params = backbone.parameters();
  for (const auto& p : head.parameters()) params.push_back(p);
  if (decoder != nullptr)
    for (const auto& p : decoder->parameters()) params.push_back(p);
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(lr));
  at::Generator gen = make_cpu_generator(seed);
  backbone.set_training(true);
  head.set_training(true);
  if (decoder != nullptr) decoder->set_training(true);
  ScheduleModels models{backbone, head, nullptr, decoder};
  const int64_t n = tokens.size(0);
  double recent = 0;
  int64_t recent_count = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t begin = (s * batch) % (n - batch + 1);
    TrainingBatch tb;
    tb.tokens = Tokens{{tokens.slice(0, begin, begin + batch)}, grids};
    if (labels.defined()) tb.labels = labels.slice(0, begin, begin + batch);
    optimizer.zero_grad();
    ScheduleLoss l = schedule.loss(models, tb, gen);
    l.loss.backward();
    optimizer.step();
    if (s >= steps - 20) {
      recent += l.loss.item<double>();
      ++recent_count;
    }
  }
  backbone.set_training(false);
  head.set_training(false);
  if (decoder != nullptr) decoder->set_training(false);
  at::Generator eval_gen = make_cpu_generator(seed + 1000);
  double total = 0;
  int64_t count = 0;
  at::NoGradGuard no_grad;
  for (int64_t begin = 0; begin + batch <= eval_tokens.size(0); begin += batch) {
    TrainingBatch tb;
    tb.tokens = Tokens{{eval_tokens.slice(0, begin, begin + batch)}, grids};
    if (eval_labels.defined()) tb.labels = eval_labels.slice(0, begin, begin + batch);
    total += schedule.loss(models, tb, eval_gen).loss.item<double>();
    ++count;
  }
  return {total / static_cast<double>(count), recent / static_cast<double>(recent_count)};
}

// The learning tests' comparison: `train(tokens, eval_tokens)` (a TrainResult) once on the data
// and once on the same data with positions shuffled per sample (the control, where visible
// tokens say little about the others); prints both losses and the time under `name`.
struct LearningComparison {
  TrainResult learned, control;
};
template <class Train>
LearningComparison compare_with_shuffled_positions(const char* name, const at::Tensor& tokens,
                                                   const at::Tensor& eval_tokens, Train train) {
  const auto start = std::chrono::steady_clock::now();
  LearningComparison r;
  r.learned = train(tokens, eval_tokens);
  r.control = train(shuffle_positions(tokens, 1), shuffle_positions(eval_tokens, 2));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: held-out loss %.4f (train %.4f), control %.4f (train %.4f), %.1f s\n", name,
              r.learned.eval_loss, r.learned.final_train, r.control.eval_loss,
              r.control.final_train, seconds);
  return r;
}

}  // namespace tessera::schedule_test
