// Learning on Fashion-MNIST tokens: a tiny VAR / HMAR model trained through the schedule for a
// bounded number of steps must (1) learn from its scale inputs — reach a held-out loss well below
// a control trained the same way on inputs shuffled across images (which can learn the class and
// the marginals, nothing more) — and (2) not see its targets — stay well above a control trained
// here, without the schedule, under a bidirectional mask, where a scale sees the next scale's
// input (which contains its own ids). A schedule whose mask leaked, or whose inputs were
// misaligned with the targets, fails one of the two.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

#include "fixtures.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/core/rng.h"
#include "tessera/schedule/hmar_schedule.h"
#include "tessera/schedule/next_scale_schedule.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace tessera {
namespace {

constexpr int64_t kTrainImages = 1024;
constexpr int64_t kEvalImages = 256;
constexpr int64_t kSteps = 200;
constexpr int64_t kBatch = 32;

// Tokens, teacher-forcing inputs and labels of Fashion-MNIST images under a random-init
// multi-scale VQ-VAE (its ids are a fixed function of the image: enough structure to learn).
struct TokenData {
  std::vector<at::Tensor> ids;  // per scale [N, n_s]
  at::Tensor inputs;            // [N, L − 1, Cvae]
  at::Tensor labels;            // [N]
  int64_t size() const { return labels.size(0); }
  TrainingBatch batch(const at::Tensor& rows, std::vector<TokenGridSize> grids,
                      bool shuffle_inputs = false) const {
    TrainingBatch b;
    for (const auto& s : ids) b.tokens.scales.push_back(s.index_select(0, rows));
    b.tokens.grids = std::move(grids);
    b.labels = labels.index_select(0, rows);
    // The control: every image gets another image's inputs (a fixed derangement of the batch).
    b.scale_inputs = inputs.index_select(0, shuffle_inputs ? rows.roll(1) : rows);
    return b;
  }
};

struct Shared {
  std::unique_ptr<MultiScaleVqVae> tokenizer;
  TokenData train, eval;
};

TokenData tokenize(MultiScaleVqVae& vq, const LabeledImages& data, int64_t count) {
  at::NoGradGuard no_grad;
  const at::Tensor images = prepare_fashion_mnist_images(data, test::kImageSize, 1)
                                .slice(0, 0, count);
  TokenData t;
  const Tokens tokens = vq.encode(images);
  t.ids = tokens.scales;
  t.inputs = vq.teacher_forcing_input(t.ids);
  t.labels = data.labels.slice(0, 0, count).to(at::kLong);
  return t;
}

Shared& shared() {
  static Shared s = [] {
    Shared out;
    out.tokenizer = std::make_unique<MultiScaleVqVae>(test::small_vqvae_config(), 1234);
    out.tokenizer->set_training(false);
    const LabeledImages train = load_fashion_mnist(DatasetSplit::train);
    {
      // A random-init codebook (uniform in ±1/V) is far smaller than the encoder's latents, so
      // its ids would follow the latents' directions only and f̂ would stay near zero. Codes drawn
      // from the latents themselves (a k-means-style start) make the residual pyramid meaningful
      // without training the tokenizer.
      at::NoGradGuard no_grad;
      const at::Tensor images =
          prepare_fashion_mnist_images(train, test::kImageSize, 1).slice(0, 0, 512);
      const at::Tensor f = out.tokenizer->encode_latent(images);
      const at::Tensor vectors = f.permute({0, 2, 3, 1}).reshape({-1, f.size(1)});
      at::Generator g = make_cpu_generator(77);
      const at::Tensor pick = at::randperm(vectors.size(0), g, at::kLong)
                                  .slice(0, 0, out.tokenizer->vocab_size());
      out.tokenizer->codebook().copy_(vectors.index_select(0, pick));
    }
    out.train = tokenize(*out.tokenizer, train, kTrainImages);
    out.eval = tokenize(*out.tokenizer, load_fashion_mnist(DatasetSplit::test), kEvalImages);
    return out;
  }();
  return s;
}

struct Model {
  std::unique_ptr<Backbone> backbone;
  std::unique_ptr<Head> head;
};

Model make_model(const MultiScaleVqVae& vq, int64_t extra_channels = 0) {
  BackboneConfig bc = test::small_backbone_config(vq, 64, 2, 2, extra_channels);
  bc.condition_dropout = 0.0;
  Model m;
  m.backbone = std::make_unique<Backbone>(bc, 17);
  m.head = make_head(test::var_head_config(64, vq.vocab_size()), 18);
  return m;
}

// Trains with `step_loss` (a loss on a batch of rows) and returns the mean held-out loss.
double train_and_evaluate(Model& m, const std::function<at::Tensor(const TokenData&,
                                                                   const at::Tensor&)>& step_loss) {
  Shared& data = shared();
  std::vector<at::Tensor> params = m.backbone->parameters();
  for (const auto& p : m.head->parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(3e-3));
  at::Generator g = make_cpu_generator(5);
  m.backbone->set_training(true);
  m.head->set_training(true);
  for (int64_t step = 0; step < kSteps; ++step) {
    const at::Tensor rows = at::randperm(data.train.size(), g, at::kLong).slice(0, 0, kBatch);
    adam.zero_grad();
    step_loss(data.train, rows).backward();
    adam.step();
  }
  m.backbone->set_training(false);
  m.head->set_training(false);
  at::NoGradGuard no_grad;
  double total = 0;
  int64_t batches = 0;
  for (int64_t b = 0; b < data.eval.size(); b += 64, ++batches)
    total += step_loss(data.eval, at::arange(b, b + 64, at::kLong)).item<double>();
  return total / static_cast<double>(batches);
}

double schedule_loss(Schedule& schedule, bool shuffle_inputs, int64_t extra_channels = 0) {
  Shared& data = shared();
  Model m = make_model(*data.tokenizer, extra_channels);
  at::Generator g = make_cpu_generator(6);
  const auto grids = data.tokenizer->token_grids(test::kImageSize, test::kImageSize);
  return train_and_evaluate(m, [&](const TokenData& d, const at::Tensor& rows) {
    ScheduleModels models{*m.backbone, *m.head, data.tokenizer.get()};
    return schedule.loss(models, d.batch(rows, grids, shuffle_inputs), g).loss;
  });
}

// The leaking control, written without the schedule: VAR's inputs and per-token cross-entropy,
// but a bidirectional mask.
double leaking_control_loss() {
  Shared& data = shared();
  Model m = make_model(*data.tokenizer);
  return train_and_evaluate(m, [&](const TokenData& d, const at::Tensor& rows) {
    const at::Tensor x = d.inputs.index_select(0, rows);
    const at::Tensor labels = d.labels.index_select(0, rows);
    std::vector<at::Tensor> ids;
    for (const auto& s : d.ids) ids.push_back(s.index_select(0, rows));
    const at::Tensor targets = at::cat(ids, 1);
    const int64_t B = targets.size(0), L = targets.size(1), W = 64;
    const BackboneOutput o = m.backbone->forward(x, labels, BlockMask::bidirectional(L));
    HeadLossOptions lo;
    lo.condition = o.condition.unsqueeze(1).expand({B, L, W}).reshape({B * L, W});
    return m.head->loss(o.hidden.reshape({B * L, W}), targets.reshape({B * L}), lo).loss;
  });
}

double leaking_control() {
  static const double value = leaking_control_loss();
  return value;
}

TEST(NextScaleLearning, VarLearnsFromScaleInputsWithoutSeeingItsTargets) {
  const auto t0 = std::chrono::steady_clock::now();
  NextScaleSchedule var;
  const double learned = schedule_loss(var, false);
  const double shuffled = schedule_loss(var, true);
  const double leaking = leaking_control();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("VAR held-out loss %.3f, shuffled-input control %.3f, bidirectional control %.3f "
              "(%.1f s)\n",
              learned, shuffled, leaking, seconds);
  EXPECT_LT(learned, shuffled - 0.08);
  EXPECT_GT(learned, leaking + 0.1);
}

TEST(NextScaleLearning, HmarLearnsFromScaleInputsWithoutSeeingItsTargets) {
  const auto t0 = std::chrono::steady_clock::now();
  HmarScheduleConfig c;
  c.loss_weighting = ScaleLossWeighting::per_token;  // comparable with the controls
  HmarSchedule hmar(c);
  const double learned = schedule_loss(hmar, false);
  const double shuffled = schedule_loss(hmar, true);
  const double leaking = leaking_control();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("HMAR held-out loss %.3f, shuffled-input control %.3f, bidirectional control %.3f "
              "(%.1f s)\n",
              learned, shuffled, leaking, seconds);
  EXPECT_LT(learned, shuffled - 0.08);
  EXPECT_GT(learned, leaking + 0.1);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// HMAR's masked fine-tuning objective (masked_training_fraction 1) through the schedule: it must
// learn from its scale inputs — reach a held-out loss on the masked positions well below the same
// objective trained on inputs shuffled across images — and must not collapse, which it would if a
// masked position saw its own token (its own share of f̂ is what the visible positions receive).
// (Whether the visible tokens of the scale lower the loss below plain next-scale HMAR's depends on
// the tokenizer: with this random-init one they did not within the step budget, so that is not
// asserted; the next-scale figure is printed for reference.)
TEST(NextScaleLearning, HmarMaskedTrainingLearnsWithoutSeeingMaskedTokens) {
  const auto t0 = std::chrono::steady_clock::now();
  HmarScheduleConfig config;
  config.loss_weighting = ScaleLossWeighting::per_token;
  config.masked_training_fraction = 1.0;
  HmarSchedule masked(config);
  const double learned = schedule_loss(masked, false, /*extra_channels=*/1);
  const double shuffled = schedule_loss(masked, true, /*extra_channels=*/1);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("HMAR masked-prediction held-out loss %.3f, shuffled-input control %.3f (%.1f s)\n",
              learned, shuffled, seconds);
  EXPECT_LT(learned, shuffled - 0.05);
  EXPECT_GT(learned, 0.5);
}

}  // namespace
}  // namespace tessera
