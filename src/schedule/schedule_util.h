#pragma once
// What the schedules' implementations share: argument checks and the guidance batch plumbing.
// Internal to src/schedule.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/nn/guidance_batch.h"
#include "tessera/schedule/schedule.h"

namespace tessera::schedule_detail {

// The one grid of a single-scale schedule.
inline TokenGridSize single_grid(const std::vector<TokenGridSize>& grids, const char* who) {
  TESSERA_CHECK(grids.size() == 1, "{}: expected one token grid (a single-scale tokenizer), got {}",
                who, grids.size());
  TESSERA_CHECK(grids[0].height >= 1 && grids[0].width >= 1,
                "{}: the token grid must be at least 1x1, got {}x{}", who, grids[0].height,
                grids[0].width);
  return grids[0];
}

// What a backbone takes, for error messages: "9 channels" or "token ids".
inline std::string backbone_input_text(const BackboneConfig& c) {
  return c.input == InputKind::vectors ? fmt::format("{} channels", c.input_channels)
                                       : std::string("token ids");
}

// Schedules other than MAR run one stack: a decoder backbone would be silently unused.
inline void check_no_decoder(const ScheduleModels& models, const char* who) {
  TESSERA_CHECK(models.decoder == nullptr,
                "{}: a decoder backbone was given, but only the mar schedule (with "
                "encoder_decoder) runs an encoder–decoder pair",
                who);
}

// HMAR's masked-prediction tail (branch blocks, a refinement head) is run by the hmar schedule
// only: anywhere else it would be silently unused.
inline void check_no_hmar_tail(const ScheduleModels& models, const char* who) {
  TESSERA_CHECK(models.refinement_head == nullptr,
                "{}: a refinement head was given, but only the hmar schedule runs one", who);
  TESSERA_CHECK(models.backbone.config().branch_blocks == 0,
                "{}: the backbone has {} branch blocks, but only the hmar schedule runs them", who,
                models.backbone.config().branch_blocks);
}

// The tokenizer must make the tokens the head predicts: ids from a codebook the size of the head's
// vocabulary, or vectors of the head's channels. Checked with the other parts so that a config
// that pairs them wrongly fails when the generator is built, not after the training set has been
// encoded (the loss's check) or a whole run has trained (the decoder's). Schedule-level tests run
// without a tokenizer (null): nothing to check then.
inline void check_tokenizer_tokens(const ScheduleModels& models, bool ids, const char* who) {
  if (models.tokenizer == nullptr) return;
  const Tokenizer& tokenizer = *models.tokenizer;
  const char* kind = tokenizer_kind_name(tokenizer.config().kind);
  if (ids) {
    TESSERA_CHECK(tokenizer.discrete(),
                  "{}: needs a tokenizer of token ids (a VQ-VAE), got a '{}' tokenizer of "
                  "continuous tokens ({} channels)",
                  who, kind, tokenizer.token_channels());
    TESSERA_CHECK(tokenizer.vocab_size() == models.head.vocab_size(),
                  "{}: the head predicts {} ids but the '{}' tokenizer's codebook has {}", who,
                  models.head.vocab_size(), kind, tokenizer.vocab_size());
  } else {
    TESSERA_CHECK(!tokenizer.discrete(),
                  "{}: needs a tokenizer of continuous tokens (a KL-VAE or patches), got a '{}' "
                  "tokenizer of token ids (codebook {})",
                  who, kind, tokenizer.vocab_size());
    TESSERA_CHECK(tokenizer.token_channels() == models.head.token_channels(),
                  "{}: the head's tokens have {} channels but the '{}' tokenizer's have {}", who,
                  models.head.token_channels(), kind, tokenizer.token_channels());
  }
}

// The batch size of a sample() call, after checking the labels against the backbone and rngs.
inline int64_t sample_batch_size(const Backbone& backbone, const at::Tensor& labels,
                                 const SampleRngs& rngs, const GenerationOptions& options,
                                 const char* who) {
  const bool conditional = backbone.config().num_classes > 0;
  if (conditional) {
    TESSERA_CHECK(labels.defined() && labels.dim() == 1,
                  "{}: a class-conditional backbone needs labels int64 [B], got {}", who,
                  labels.defined() ? "a tensor of shape " + fmt::format("{}", labels.sizes())
                                   : std::string("none"));
    TESSERA_CHECK(labels.size(0) == rngs.size(),
                  "{}: {} labels but {} sample generators; they must match", who, labels.size(0),
                  rngs.size());
  } else {
    TESSERA_CHECK(!labels.defined(), "{}: labels were given but the backbone is unconditional",
                  who);
    TESSERA_CHECK(!options.guidance.doubles_batch(),
                  "{}: classifier-free guidance needs a class-conditional backbone", who);
  }
  TESSERA_CHECK(rngs.size() >= 1, "{}: nothing to sample (no generators)", who);
  return rngs.size();  // the options were validated once, by Schedule::sample
}

// The labels the backbone runs with: doubled (conditional half, then the null class) under
// guidance. See Note [Guidance batch layout].
inline at::Tensor backbone_labels(const Backbone& backbone, const at::Tensor& labels,
                                  const GenerationOptions& options) {
  if (!labels.defined()) return {};
  at::Tensor l = labels.to(backbone.device(), at::kLong);
  return options.guidance.doubles_batch() ? guidance_labels(l, backbone.null_class()) : l;
}

inline at::Tensor maybe_double(const at::Tensor& batch, const GenerationOptions& options) {
  return options.guidance.doubles_batch() ? repeat_for_guidance(batch) : batch;
}

// Condition rows for a discrete AdaLN-before-head projection: the backbone's condition repeated
// for each of a sample's `rows` rows (sample-major, like the hidden rows); undefined otherwise.
inline at::Tensor head_condition(Head& head, const at::Tensor& condition, int64_t rows) {
  const HeadConfig config = head.config();
  if (config.kind != HeadKind::discrete ||
      config.discrete.projection != DiscreteProjection::adaln || !condition.defined()) {
    return {};
  }
  return condition.repeat_interleave(rows, 0);
}

// Training labels on the backbone's device (undefined for an unconditional backbone).
inline at::Tensor training_labels(const Backbone& backbone, const TrainingBatch& batch,
                                  int64_t batch_size, const char* who) {
  if (backbone.config().num_classes == 0) return {};
  TESSERA_CHECK(
      batch.labels.defined() && batch.labels.dim() == 1 && batch.labels.size(0) == batch_size,
      "{}: a class-conditional backbone needs labels int64 [{}]", who, batch_size);
  return batch.labels.to(backbone.device(), at::kLong);
}

// Ascending argsort of each row of a [rows, n] tensor.
inline at::Tensor argsort_rows(const at::Tensor& x) {
  return at::argsort(x, /*dim=*/int64_t{1}, /*descending=*/false);
}

// Per row, a uniformly random permutation of 0..n−1 (argsort of uniforms), int64 [rows, n].
inline at::Tensor random_orders(int64_t rows, int64_t n, at::Generator& generator) {
  return argsort_rows(at::empty({rows, n}, at::kFloat).uniform_(0.0, 1.0, generator));
}

}  // namespace tessera::schedule_detail

namespace tessera::schedule_detail {

// Evaluation mode for the duration of a sample() call (no condition dropout, no drop path), then
// the caller's modes back.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(const ScheduleModels& models)
      : backbone_(models.backbone),
        head_(models.head),
        decoder_(models.decoder),
        backbone_training_(models.backbone.is_training()),
        head_training_(models.head.is_training()),
        decoder_training_(models.decoder != nullptr && models.decoder->is_training()) {
    backbone_.set_training(false);
    head_.set_training(false);
    if (decoder_ != nullptr) decoder_->set_training(false);
  }
  ~EvalModeGuard() {
    backbone_.set_training(backbone_training_);
    head_.set_training(head_training_);
    if (decoder_ != nullptr) decoder_->set_training(decoder_training_);
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  Backbone& backbone_;
  Head& head_;
  Backbone* decoder_;
  bool backbone_training_, head_training_, decoder_training_;
};

}  // namespace tessera::schedule_detail
