#pragma once
// The Schedule interface: the order in which a generator produces tokens — which positions are
// predicted at each step, what they see (the BlockMask), how a training example is made — over
// the same backbone, head and tokenizer (DESIGN.md §1).
//
//   train:  ScheduleLoss l = schedule.loss(models, {tokens, labels}, generator);
//           l.loss.backward();
//   sample: Tokens t = schedule.sample(models, labels, options, rngs);
//           images = tokenizer.decode(t);
//
// A schedule owns no parameters: everything learned lives in the backbone and the head (and the
// tokenizer), so one checkpoint format serves every schedule and a schedule's sampling options can
// change without retraining. Schedules know nothing of pixels; the next-scale family reads the
// tokenizer only for its scale inputs (f̂, see tokenizer/multiscale_vq_vae.h).
//
// Note [Schedule batch invariance]
// sample() draws every random number of sample b from rngs.generator(b), making the same draws
// per sample at every step whatever the batch (one uniform per position, never "as many as the
// batch needs"), so sample b is the same alone or in a batch (Note [Batch-invariant sampling] in
// core/rng.h). Decisions that depend on a sample's own draws (which positions MaskGIT re-masks,
// MAR's random order) are made per sample; decisions that must be shared across the batch (how
// many positions a step commits) depend only on the step, never on other samples' draws.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/rng.h"
#include "tessera/head/guidance.h"
#include "tessera/head/head.h"
#include "tessera/head/sampling_options.h"
#include "tessera/nn/backbone.h"
#include "tessera/tokenizer/tokenizer.h"
#include "tessera/tokenizer/tokens.h"

namespace tessera {

/// The learned parts a schedule drives. The tokenizer is needed only by schedules whose inputs
/// come from it (next-scale: f̂); others accept nullptr. `decoder` is the second stack of MAR's
/// MAE encoder–decoder split (Note [MAR encoder–decoder split] in mar_schedule.h), where
/// `backbone` is the encoder; every other schedule requires nullptr.
struct ScheduleModels {
  Backbone& backbone;  ///< the transformer (MAR: the encoder)
  Head& head;  ///< the head
  Tokenizer* tokenizer = nullptr;  ///< for schedules whose inputs come from it
  Backbone* decoder = nullptr;  ///< MAR's decoder stack, or nullptr
  /// HMAR's masked-prediction head (GeneratorConfig::refinement_head): the hmar schedule's
  /// refinement pass uses it; other schedules refuse it.
  Head* refinement_head = nullptr;
};

/// One training batch: ground-truth tokens (what tokenizer.encode returned) and class labels.
struct TrainingBatch {
  Tokens tokens{};  ///< ground-truth tokens
  at::Tensor labels{};  ///< int64 [B]; undefined for an unconditional backbone
  /// Next-scale schedules: the teacher-forcing input [B, L − first scale, C] (the tokenizer's
  /// teacher_forcing_input(ids)), when precomputed with the tokens; computed from the tokenizer
  /// when undefined.
  at::Tensor scale_inputs{};
};

struct ScheduleLoss {
  at::Tensor loss{};  ///< scalar, differentiable
  /// Named scalars for logs (the head's terms, "mask_ratio", ...).
  std::vector<std::pair<std::string, double>> terms{};
  int64_t predicted_tokens = 0;  ///< rows the loss averaged over
};  ///< One training step's loss, its terms and how many tokens it covers.

/// What every schedule's sampler takes besides its own options (which live in its config and may
/// change between calls without retraining).
struct GenerationOptions {
  Guidance guidance{};  ///< classifier-free guidance
  HeadSamplingOptions head{};  ///< how the head samples

  template <class Visitor>
  void visit(Visitor& v) {
    v("guidance", guidance);
    v("head", head);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};

class Schedule {
 public:
  virtual ~Schedule() = default;

  /// "raster", "maskgit", "mar", "next_scale", "hmar", "hi_mar".
  virtual std::string name() const = 0;

  /// Throws tessera::Error naming what does not fit: the backbone's segments, input kind or
  /// vocabulary against the token grids, the head's kind (ids vs vectors), a missing tokenizer.
  virtual void check_models(const ScheduleModels& models,
                            const std::vector<TokenGridSize>& grids) const = 0;

  /// The mask the backbone trains under, for a sequence of these token grids (in the backbone's
  /// coordinates, condition positions included).
  virtual BlockMask training_mask(const std::vector<TokenGridSize>& grids) const = 0;

  /// One training step's loss; random choices (masks, orders, spans) come from `generator`.
  virtual ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                            at::Generator& generator) = 0;

  /// Generates tokens for labels [B] (undefined: unconditional, with batch size rngs.size()), on
  /// the grids `grids`. Runs without autograd. See Note [Schedule batch invariance].
  virtual Tokens sample(const ScheduleModels& models, const at::Tensor& labels,
                        const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                        SampleRngs& rngs) = 0;

  /// Backbone evaluations one sample() makes (each step's forward, guidance included as one call),
  /// for reports ("steps" in the demo's table).
  virtual int64_t num_steps(const std::vector<TokenGridSize>& grids) const = 0;
};  ///< The generation order over a backbone, head and tokenizer; see the file's top comment.

}  // namespace tessera
