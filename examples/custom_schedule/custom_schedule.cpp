// A new schedule plugged into existing parts: next-row prediction. A grid of h rows of tokens is
// generated in h steps, all w tokens of a row at once, each row seeing the class token and every
// row above it — between raster order (one token per step) and MaskGIT (all tokens, refined).
//
//   example_custom_schedule [steps] [out folder] [tokenizer.safetensors] [training images]
//
// The default 300 steps on 10,000 images took about 3 minutes on the project's 2-core machine;
// `ctest -L packaging` runs 20 steps on 1,000 images.
//
// It drives the stock Backbone (a MaskGIT-style ViT with one segment per row), the stock discrete
// head and the shipped VQ-VAE, trains them for a few steps and samples a grid, with classifier-free
// guidance and a KV cache. docs/extending.md walks through this file.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/io/image_io.h"
#include "tessera/core/rng.h"
#include "tessera/nn/guidance_batch.h"
#include "tessera/train/generator_training.h"
#include "tessera/train/optimizer.h"
#include "tessera/schedule/schedule.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/tokenizer/tokenizer_training.h"

namespace {

// Sequence layout: segment 0 is the class token; segment r + 1 (w positions) predicts image row r
// and holds row r − 1's tokens as its inputs (row 0's inputs are the start id V). Under a
// block-causal mask the rows predicting row r see the inputs of rows < r only: no leak, and all w
// tokens of a row come from one backbone call.
tessera::TokenLayout row_layout(const tessera::TokenGridSize& grid) {
  std::vector<int64_t> segments = {1};
  segments.insert(segments.end(), grid.height, grid.width);
  return tessera::TokenLayout(segments);
}

// Sets evaluation mode for the scope (sampling must not drop conditions or paths), then restores.
class EvalMode {
 public:
  explicit EvalMode(const tessera::ScheduleModels& m)
      : m_(m), backbone_(m.backbone.is_training()), head_(m.head.is_training()) {
    m_.backbone.set_training(false);
    m_.head.set_training(false);
  }
  ~EvalMode() {
    m_.backbone.set_training(backbone_);
    m_.head.set_training(head_);
  }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  const tessera::ScheduleModels& m_;
  bool backbone_, head_;
};

class NextRowSchedule final : public tessera::Schedule {
 public:
  std::string name() const override { return "next_row"; }

  // Every mismatch is an error that names the part and what it expected, before any work.
  void check_models(const tessera::ScheduleModels& models,
                    const std::vector<tessera::TokenGridSize>& grids) const override {
    TESSERA_CHECK(grids.size() == 1, "next-row schedule: needs one token grid, got {}", grids.size());
    const tessera::BackboneConfig& c = models.backbone.config();
    const tessera::HeadConfig head = models.head.config();
    TESSERA_CHECK(c.input == tessera::InputKind::token_ids && c.num_classes > 0 &&
                      c.condition_tokens == 1,
                  "next-row schedule: the backbone must take token ids after one class token");
    TESSERA_CHECK(models.backbone.layout() == row_layout(grids[0]),
                  "next-row schedule: the backbone's segments must be {} (class token, one per "
                  "row), got {}",
                  row_layout(grids[0]).to_string(), models.backbone.layout().to_string());
    TESSERA_CHECK(head.kind == tessera::HeadKind::discrete &&
                      head.discrete.projection == tessera::DiscreteProjection::linear,
                  "next-row schedule: needs a discrete head with a linear projection");
    TESSERA_CHECK(models.head.hidden_width() == c.width && c.vocab_size == models.head.vocab_size() + 1,
                  "next-row schedule: the head must take width {} and the backbone's vocabulary "
                  "must be the head's + 1 (the start id), got {} and {}",
                  c.width, models.head.hidden_width(), c.vocab_size);
  }

  tessera::BlockMask training_mask(const std::vector<tessera::TokenGridSize>& grids) const override {
    return tessera::BlockMask::block_causal(row_layout(grids.at(0)));
  }


  // Teacher forcing: every row is predicted from the true rows above it, in one forward pass.
  tessera::ScheduleLoss loss(const tessera::ScheduleModels& models,
                             const tessera::TrainingBatch& batch,
                             at::Generator& generator) override {
    check_models(models, batch.tokens.grids);
    const at::Tensor ids = batch.tokens.scales.at(0);  // int64 [B, L], raster order
    const int64_t B = ids.size(0), L = ids.size(1), w = batch.tokens.grids[0].width;
    const at::Tensor start = at::full({B, w}, models.head.vocab_size(), ids.options());
    const at::Tensor inputs = at::cat({start, ids.slice(1, 0, L - w)}, 1);  // shifted down a row

    tessera::BackboneForwardOptions forward;
    forward.generator = generator;  // condition dropout draws from it
    const tessera::BackboneOutput out = models.backbone.forward(
        inputs, batch.labels, training_mask(batch.tokens.grids), forward);
    // Row 0 of the output is the class token's; rows 1..L predict tokens 0..L−1.
    const at::Tensor hidden = out.hidden.slice(1, 1, 1 + L).reshape({B * L, -1});
    const tessera::HeadLoss head = models.head.loss(hidden, ids.reshape({B * L}), {});
    return {head.loss, head.terms, B * L};
  }

 protected:
  // One row per step. Schedule::sample has checked the request (options, check_models) once; each
  // step draws through `head`, which does not check again. This schedule has no sampling options
  // of its own, so the default check_sampling refuses any in options.schedule.
  int64_t num_steps_impl(const std::vector<tessera::TokenGridSize>& grids,
                         const tessera::GenerationOptions&) const override {
    return grids.at(0).height;
  }

  tessera::Tokens sample_impl(const tessera::ScheduleModels& models, const at::Tensor& labels,
                              const std::vector<tessera::TokenGridSize>& grids,
                              const tessera::GenerationOptions& options,
                              const tessera::CheckedHeadOptions& head,
                              tessera::SampleRngs& rngs) override {
    const int64_t B = rngs.size(), h = grids[0].height, w = grids[0].width;
    TESSERA_CHECK(labels.defined() && labels.size(0) == B,
                  "next-row schedule: needs one label per sample generator ({})", B);
    at::NoGradGuard no_grad;
    EvalMode eval(models);
    tessera::Backbone& backbone = models.backbone;

    // Classifier-free guidance: the backbone runs the batch twice, conditional half first, the
    // second half with the null class (Note [Guidance batch layout]); the head combines them.
    const bool guided = options.guidance.doubles_batch();
    const at::Tensor run_labels =
        guided ? tessera::guidance_labels(labels, backbone.null_class()) : labels;
    const auto doubled = [&](const at::Tensor& t) {
      return guided ? tessera::repeat_for_guidance(t) : t;
    };

    const tessera::BlockMask full = training_mask(grids);
    tessera::KVCache cache = backbone.make_kv_cache(run_labels.size(0));
    at::Tensor previous = at::full({B, w}, models.head.vocab_size(), at::kLong);  // start ids
    std::vector<at::Tensor> rows;
    for (int64_t r = 0; r < h; ++r) {
      // Step 0 also runs the class token (the prefill); each step adds one row's keys to the cache.
      const int64_t begin = r == 0 ? 0 : 1 + r * w, end = 1 + (r + 1) * w;
      tessera::BackboneForwardOptions forward;
      forward.cache = &cache;
      const tessera::BackboneOutput out =
          backbone.forward(doubled(previous), run_labels, full.rows(begin, end), forward);
      const at::Tensor hidden = out.hidden.slice(1, -w).reshape({-1, backbone.width()});

      tessera::HeadStep step;
      step.progress.step = r;
      step.progress.num_steps = h;
      previous = head.draw(models.head, hidden, rngs, step).values.view({B, w});
      rows.push_back(previous);
    }
    return {{at::cat(rows, 1)}, grids};
  }
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const int64_t steps = argc > 1 ? std::stoll(argv[1]) : 300;
    const std::filesystem::path out = argc > 2 ? argv[2] : "out/example_custom_schedule";
    const std::string tokenizer_file =
        argc > 3 ? argv[3] : "models/tokenizers/vq_vae_fashion_mnist.safetensors";
    const int64_t train_images = argc > 4 ? std::stoll(argv[4]) : 10000;

    std::unique_ptr<tessera::Tokenizer> tokenizer =
        tessera::load_tokenizer_checkpoint(tokenizer_file);
    const std::vector<tessera::TokenGridSize> grids = tokenizer->token_grids(32, 32);
    const int64_t V = tokenizer->vocab_size();

    // Stock parts: a bidirectional ViT whose segments are the rows (the mask comes from the
    // schedule), and the discrete head.
    tessera::BackboneConfig backbone_config =
        tessera::maskgit_style_config(64, 2, 2, grids[0].count(), V + 1, /*num_classes=*/10);
    backbone_config.segments = row_layout(grids[0]).segment_lengths();
    backbone_config.condition_dropout = 0.1;  // trains the null class, which guidance needs
    tessera::Backbone backbone(backbone_config, /*seed=*/0);
    tessera::HeadConfig head_config;
    head_config.discrete.width = 64;
    head_config.discrete.vocab_size = V;
    const std::unique_ptr<tessera::Head> head = tessera::make_head(head_config, /*seed=*/0);
    NextRowSchedule schedule;
    const tessera::ScheduleModels models{backbone, *head, tokenizer.get()};
    schedule.check_models(models, grids);

    // The schedule's mask and order checked by perturbation: rows 0..r of the predictions must not
    // change when the tokens of rows >= r change (they may see only the rows above).
    const tessera::LabeledImages train = tessera::load_fashion_mnist(tessera::DatasetSplit::train);
    const tessera::Tokens dataset = tessera::encode_dataset(
        *tokenizer, tessera::prepare_fashion_mnist_images(train, 32, 1).slice(0, 0, train_images),
        500);
    const at::Tensor labels = train.labels.slice(0, 0, train_images);
    {
      const int64_t r = 3, w = grids[0].width;
      at::Tensor ids = dataset.scales[0].slice(0, 0, 2);
      at::Tensor changed = ids.clone();
      changed.slice(1, r * w).random_(0, V);
      const auto hidden_of = [&](const at::Tensor& t) {
        const at::Tensor inputs = at::cat({at::full({2, w}, V, t.options()), t.slice(1, 0, -w)}, 1);
        EvalMode eval(models);
        return backbone.forward(inputs, labels.slice(0, 0, 2), schedule.training_mask(grids))
            .hidden.slice(1, 1, 1 + (r + 1) * w);
      };
      std::printf("leak check: rows 0..%lld unchanged when rows >= %lld change: max |diff| %.1e\n",
                  static_cast<long long>(r), static_cast<long long>(r),
                  (hidden_of(ids) - hidden_of(changed)).abs().max().item<double>());
    }

    // Training: the backbone's and head's parameters under distinct names.
    std::map<std::string, at::Tensor> parameters;
    for (const auto& [name, t] : backbone.state_dict()) {
      if (t.requires_grad()) parameters.emplace("backbone." + name, t);
    }
    for (const auto& [name, t] : head->state_dict()) {
      if (t.requires_grad()) parameters.emplace("head." + name, t);
    }
    const auto optimizer = tessera::make_optimizer({.learning_rate = 6e-4, .weight_decay = 0.05});
    at::Generator rng = tessera::make_cpu_generator(0);
    backbone.set_training(true);
    head->set_training(true);
    for (int64_t step = 1; step <= steps; ++step) {
      const at::Tensor rows = at::randint(train_images, {64}, rng, at::TensorOptions().dtype(at::kLong));
      const tessera::TrainingBatch batch{{{dataset.scales[0].index_select(0, rows)}, grids},
                                         labels.index_select(0, rows)};
      const tessera::ScheduleLoss loss = schedule.loss(models, batch, rng);
      for (auto& [name, p] : parameters) p.mutable_grad() = at::Tensor();
      loss.loss.backward();
      optimizer->step(parameters, 6e-4);
      if (step % 50 == 0 || step == steps) {
        std::printf("step %lld: loss %.4f\n", static_cast<long long>(step), loss.loss.item<double>());
      }
    }

    // Sampling: 8 backbone calls for an 8x8 grid, whatever the guidance.
    const at::Tensor grid_labels = at::arange(10).repeat_interleave(4);
    tessera::SampleRngs rngs(/*seed=*/0, /*first_index=*/0, grid_labels.size(0));
    const tessera::Tokens tokens = schedule.sample(
        models, grid_labels, grids, {.guidance = tessera::Guidance::constant(2.0)}, rngs);
    tessera::write_image_grid(out / "samples.png", tokenizer->decode(tokens),
                              {.columns = 4, .pad_value = 96, .upscale = 2});
    std::printf("wrote %s (%lld steps per sample, one row per class)\n",
                (out / "samples.png").c_str(), static_cast<long long>(schedule.num_steps(grids)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_custom_schedule: %s\n", e.what());
    return 1;
  }
  return 0;
}
