// A new head plugged into existing parts: a softmax head that samples with min-p filtering (keep
// the tokens whose probability is at least min_p times the most likely token's; Nguyen et al.,
// "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs", 2024).
//
//   example_custom_head [maskgit model.safetensors] [out.png] [min_p]
//
// The head names its parameters as the built-in discrete head does ("head.weight", "head.bias"),
// so it loads the shipped MaskGIT model's trained head and samples through the stock MaskGIT
// schedule, backbone and tokenizer. docs/extending.md walks through this file.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "tessera/core/error.h"
#include "tessera/io/image_io.h"
#include "tessera/core/rng.h"
#include "tessera/head/guidance.h"
#include "tessera/head/head.h"
#include "tessera/pipeline/generator.h"

namespace {

// The module that owns the parameters. Its registered name "head" makes the state-dict keys
// "head.weight" and "head.bias": the discrete head's (linear projection) names.
struct MinPNet : torch::nn::Module {
  MinPNet(int64_t width, int64_t vocab_size)
      : head(register_module("head", torch::nn::Linear(width, vocab_size))) {}
  torch::nn::Linear head;
};

class MinPHead final : public tessera::Head {
 public:
  MinPHead(int64_t width, int64_t vocab_size, double min_p)
      : MinPHead(std::make_shared<MinPNet>(width, vocab_size), min_p) {}

  // Schedules ask the config what kind of values the head makes: ids of a codebook of V. (The
  // config cannot say "min-p": HeadConfig is closed, which is why a custom head is used through
  // ScheduleModels rather than stored in a generator file.)
  tessera::HeadConfig config() const override {
    tessera::HeadConfig c;
    c.kind = tessera::HeadKind::discrete;
    c.discrete.width = hidden_width();
    c.discrete.vocab_size = vocab_size();
    return c;
  }
  int64_t hidden_width() const override { return net_->head->options.in_features(); }
  int64_t vocab_size() const override { return net_->head->options.out_features(); }
  int64_t token_channels() const override { return 0; }

  // Cross-entropy per row, averaged with the row weights (MAR-style masks weigh rows 0 or 1).
  tessera::HeadLoss loss(const at::Tensor& hidden, const at::Tensor& targets,
                         const tessera::HeadLossOptions& options) override {
    const at::Tensor log_p = net_->head(hidden).log_softmax(-1);
    const at::Tensor per_row = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1);
    const at::Tensor loss = options.weights.defined()
                                ? (per_row * options.weights).sum() / options.weights.sum()
                                : per_row.mean();
    return {loss, {{"cross_entropy", loss.item<double>()}}};
  }

  // Head::sample validated `guidance` and `options` (once per request when a schedule calls).
  tessera::HeadSample sample_impl(const at::Tensor& hidden, const tessera::Guidance& guidance,
                                  const tessera::HeadSamplingOptions& options,
                                  tessera::SampleRngs& rngs,
                                  const tessera::HeadStep& step) override {
    at::NoGradGuard no_grad;
    at::Tensor logits = net_->head(hidden);
    // Under guidance the schedule sends the conditional rows, then the same rows unconditional
    // (Note [Guidance batch layout]); the convention's weight depends on the step.
    if (guidance.doubles_batch()) {
      const auto [cond, uncond] = tessera::split_guidance_batch(logits, "min-p head");
      logits = tessera::apply_guidance(cond, uncond, guidance.weight_at(step.progress));
    }
    const int64_t rows = logits.size(0), samples = rngs.size();
    TESSERA_CHECK(rows % samples == 0, "min-p head: {} rows do not split into {} samples", rows,
                  samples);
    at::Tensor probs = (logits / options.temperature).softmax(-1);
    const at::Tensor most_likely = std::get<0>(probs.max(-1, /*keepdim=*/true));
    probs = at::where(probs >= min_p_ * most_likely, probs, at::zeros_like(probs));

    // Inverse-CDF draw with one uniform per position from the sample's own stream: rows are
    // sample-major, and sample b's draws do not depend on the batch (Note [Schedule batch
    // invariance]). A token of probability 0 can never be picked: its CDF step is empty.
    const at::Tensor cdf = probs.cumsum(-1);
    const at::Tensor u = rngs.uniform({rows / samples}, probs.device()).reshape({rows, 1});
    const at::Tensor ids = (cdf < u * cdf.narrow(1, vocab_size() - 1, 1)).sum(-1);
    const at::Tensor p = probs.gather(1, ids.unsqueeze(1)).squeeze(1) / cdf.select(1, vocab_size() - 1);
    // MaskGIT ranks positions by the log-probability of their draw to decide what to re-mask.
    return {ids, p, p.log()};
  }

 private:
  MinPHead(std::shared_ptr<MinPNet> net, double min_p)
      : Head(net), net_(std::move(net)), min_p_(min_p) {
    TESSERA_CHECK(min_p_ >= 0 && min_p_ < 1, "min-p head: min_p must be in [0, 1), got {}", min_p_);
  }
  std::shared_ptr<MinPNet> net_;
  double min_p_;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string model = argc > 1 ? argv[1] : "models/maskgit_fashion_mnist.safetensors";
    const std::string out = argc > 2 ? argv[2] : "custom_head.png";
    const double min_p = argc > 3 ? std::stod(argv[3]) : 0.1;

    tessera::Generator generator = tessera::Generator::load(model);
    const tessera::HeadConfig stock = generator.head().config();
    MinPHead head(stock.discrete.width, stock.discrete.vocab_size, min_p);
    head.load_state_dict(generator.head().state_dict());  // strict: every key and shape must match

    // The loss agrees with the stock head's (both are cross-entropy over the same logits).
    at::manual_seed(0);
    const at::Tensor hidden = at::randn({16, head.hidden_width()});
    const at::Tensor targets = at::randint(head.vocab_size(), {16});
    std::printf("cross-entropy: min-p head %.6f, stock head %.6f\n",
                head.loss(hidden, targets, {}).loss.item<double>(),
                generator.head().loss(hidden, targets, {}).loss.item<double>());

    // The same schedule, backbone and tokenizer; only the head is ours. Two samples per class,
    // the stock head's row above the min-p head's, from the same seeds.
    const at::Tensor labels = at::arange(generator.num_classes()).repeat_interleave(2);
    tessera::ScheduleModels ours{generator.backbone(), head, &generator.tokenizer()};
    tessera::SampleRngs rngs(/*seed=*/3, /*first_index=*/0, labels.size(0));
    const tessera::Tokens tokens = generator.schedule().sample(
        ours, labels, generator.token_grids(), generator.config().sampling, rngs);
    const at::Tensor mine = generator.tokenizer().decode(tokens);
    const at::Tensor theirs = generator.sample(labels, {.seed = 3});
    tessera::write_image_grid(out, at::cat({theirs, mine}),
                              {.columns = labels.size(0), .pad_value = 96, .upscale = 2});
    std::printf("wrote %s: stock discrete head (top row) and min-p head, min_p %.2f (bottom)\n",
                out.c_str(), min_p);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_custom_head: %s\n", e.what());
    return 1;
  }
  return 0;
}
