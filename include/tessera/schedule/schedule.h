#pragma once
// The Schedule interface: the order in which a generator produces tokens — which positions are
// predicted at each step, what they see (the BlockMask), how a training example is made — over
// the same backbone, head and tokenizer (docs/architecture.md).
//
//   train:  ScheduleLoss l = schedule.loss(models, {tokens, labels}, generator);
//           l.loss.backward();
//   sample: Tokens t = schedule.sample(models, labels, grids, options, rngs);
//           images = tokenizer.decode(t);
//
// A schedule owns no parameters: everything learned lives in the backbone and the head (and the
// tokenizer), so one checkpoint format serves every schedule and a schedule's sampling options can
// change without retraining: they travel with each request (GenerationOptions::schedule, see
// schedule_sampling.h), the schedule's config holding only their defaults. Schedules know nothing
// of pixels; the next-scale family reads the tokenizer only for its scale inputs (f̂, through
// tokenizer/multiscale_tokenizer.h).
//
// Writing a schedule: override check_models, training_mask, loss, sample_impl and num_steps_impl
// (and check_sampling when it has sampling options). Schedule::sample validates a request once —
// the guidance and head options (CheckedHeadOptions), the models against the grids, the schedule's
// sampling options (check_sampling) — and then calls sample_impl, which draws each step through
// the CheckedHeadOptions it is given without checking again.
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
#include "tessera/schedule/schedule_sampling.h"
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

/// What a sampling request asks of a schedule: guidance, how the head samples, and the schedule's
/// own sampling options (MaskGIT's steps, ...; empty: the schedule's defaults).
struct GenerationOptions {
  Guidance guidance{};  ///< classifier-free guidance
  HeadSamplingOptions head{};  ///< how the head samples
  /// Options of the schedule's kind (schedule_sampling.h), or empty for the defaults its config
  /// records. Not listed by visit(): its keys depend on the schedule's kind, which a
  /// GenerationOptions does not know, and a generator file records the defaults in its schedule
  /// section (GeneratorConfig::schedule), so GeneratorConfig::sampling keeps its two keys.
  /// pipeline/sampling_request.h reads a JSON "schedule" object onto the generator's kind.
  ScheduleSamplingOptions schedule{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("guidance", guidance);
    v("head", head);
  }  ///< Lists guidance and head for the config reader and writer (core/config.h).
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
  /// the grids `grids`, with the request's options (options.schedule empty: the schedule's
  /// defaults). Runs without autograd. See Note [Schedule batch invariance]. Validates the request
  /// once (guidance, head options, check_models, check_sampling), then runs sample_impl; throws
  /// tessera::Error naming what is wrong.
  Tokens sample(const ScheduleModels& models, const at::Tensor& labels,
                const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                SampleRngs& rngs);

  /// Backbone evaluations one sample() with these options makes (each step's forward, guidance
  /// included as one call), for reports ("steps" in the demo's table).
  int64_t num_steps(const std::vector<TokenGridSize>& grids,
                    const GenerationOptions& options = {}) const {
    return num_steps_impl(grids, options);
  }

  /// Throws tessera::Error unless options.schedule fits this schedule and these grids: empty, or
  /// of its kind, valid, and within what the grids allow (MaskGIT's steps at most its units, ...).
  /// The default accepts empty options only (a schedule without sampling options).
  virtual void check_sampling(const std::vector<TokenGridSize>& grids,
                              const GenerationOptions& options) const;

 protected:
  /// sample() after its checks: `head` is the request's guidance and head options, validated;
  /// draw every step through it (CheckedHeadOptions::draw). Must not re-check the request.
  virtual Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                             const std::vector<TokenGridSize>& grids,
                             const GenerationOptions& options, const CheckedHeadOptions& head,
                             SampleRngs& rngs) = 0;
  /// num_steps() for these options (their schedule part possibly empty: the defaults).
  virtual int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                                 const GenerationOptions& options) const = 0;
};  ///< The generation order over a backbone, head and tokenizer; see the file's top comment.

}  // namespace tessera
