#pragma once
// MaskGIT: bidirectional attention over token ids with a mask id, a class-token prefix, training on
// a random mask ratio γ(r), and T-step iterative decoding that keeps the most confident draws;
// MAGNeT's span masking as an option.
//
// Sequence (backbone segments {c, L}, or {L} when c = 0): c condition tokens (MaskGIT: one class
// token), then the L tokens of the grid in raster order. The mask id is V (the head's vocabulary
// size, the tokenizer's codebook size), so the backbone's vocab_size is V + 1.
//
// Note [MaskGIT decoding]
// Training: per sample r ~ U(0, 1), n = clamp(⌈γ(r)·U⌉, 1, U) of the U units (tokens, or spans —
// below) chosen uniformly at random are replaced by the mask id; the loss is the cross-entropy on
// the masked tokens only.
// Sampling, step s of T (0-based): the backbone sees the current ids (mask id where unknown); the
// head draws a token at every position (one draw per position, so the draws per sample do not
// depend on the batch); positions unknown before the step take their draw, committed ones keep
// theirs. Each position's confidence is
//     log p(drawn) + choice_temperature · (1 − (s + 1)/T) · g,   g ~ Gumbel(0, 1)
// (MaskGIT's mask_by_random_topk), and among the positions unknown before the step the
// masked_after_step(curve, U, s, T, unknown) least confident (Note [Masked decoding counts]) are
// reset to the mask id. Committed positions are never re-masked; the last step commits all.
//
// Note [Span masking]
// With span_length k > 1 (MAGNeT) sampling cuts the L tokens into U = L / k aligned chunks of k
// consecutive tokens in raster order (MAGNeT's default `nonoverlap` arrangement; L must be a
// multiple of k), ranks chunks by the max (MAGNeT's `max` scoring) or the mean (the order of
// MAGNeT's `prod`, a sum of log-probabilities over equal-length chunks) of their tokens'
// confidences and re-masks whole chunks; the step counts are in chunks.
// Training (span_training):
//   overlapping (MAGNeT's training, the default): the target rate p = γ(r) is rounded to a
//     percentage m = round(100·p); u = LUT[m] span starts (at least 1) are placed at uniformly
//     random distinct positions and each masks itself and the k − 1 tokens after it (cut at the
//     end), so spans overlap. LUT[m] is the smallest u whose mean masked fraction
//     1 − C(L − k, u) / C(L, u) (MAGNeT, appendix C) reaches m/100, which makes the expected
//     rate match γ despite the overlaps.
//   aligned: whole aligned chunks, n = clamp(⌈γ(r)·U⌉, 1, U) of them: the units sampling re-masks.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/schedule/masking.h"
#include "tessera/schedule/schedule.h"

namespace tessera {
/// Which spans training masks (how sampling scores a span, SpanScoring, is in
/// schedule_sampling.h).
enum class SpanTraining { overlapping, aligned };

template <>
struct ConfigEnum<SpanTraining> {  /// Each value with its name.
  static constexpr std::pair<SpanTraining, const char*> values[] = {
      {SpanTraining::overlapping, "overlapping"}, {SpanTraining::aligned, "aligned"}};
};  ///< The names of SpanTraining values in JSON configs.

struct MaskGitScheduleConfig {
  /// Leading condition positions of the backbone (its condition_tokens): 1 for a class token, 0
  /// for an unconditional or AdaLN-only backbone.
  int64_t condition_tokens = 1;
  // --- training ---
  MaskingCurve training_curve = MaskingCurve::cosine;  ///< γ of the mask ratio γ(r), r ~ U(0, 1)
  // --- span masking (MAGNeT), see Note [Span masking] ---
  int64_t span_length = 1;  ///< 1: per-token masking
  SpanTraining span_training = SpanTraining::overlapping;  ///< which spans training masks
  /// Sampling defaults (steps, curve, choice_temperature, span_scoring); a request may override
  /// them (GenerationOptions::schedule).
  MaskGitSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("condition_tokens", condition_tokens);
    v("training_curve", training_curve);
    v("span_length", span_length);
    v("span_training", span_training);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< MaskGitSchedule's options.

/// MAGNeT's lookup table for overlapping spans of length k over L tokens: entry m (0..100) is the
/// number of span starts whose mean masked fraction first reaches m/100 (Note [Span masking]).
std::vector<int64_t> overlapping_span_starts_table(int64_t tokens, int64_t span_length);

class MaskGitSchedule final : public Schedule {
 public:
  explicit MaskGitSchedule(MaskGitScheduleConfig config = {});  ///< A schedule with these options.

  const MaskGitScheduleConfig& config() const { return config_; }  ///< Its options.

  std::string name() const override { return "maskgit"; }
  /// Requires token-id inputs with vocab_size = V + 1 (V the head's), segments {c, L} (or {L}), a
  /// discrete head, L a multiple of span_length.
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Bidirectional over {c, L}.
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  /// The steps must not exceed the units (tokens / span_length): each commits at least one.
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const MaskGitSamplingOptions& sampling_options(const GenerationOptions& options) const;

  /// The training mask of one batch, bool [B, L] (true = masked): exposed so tests can check the
  /// span structure and the ratio rule. Draws r [B] (double), then the scores (float; [B, U] for
  /// aligned units, [B, L] span starts for overlapping spans) from `generator`.
  at::Tensor draw_training_mask(int64_t batch, int64_t tokens, at::Generator& generator) const;

 protected:
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  TokenLayout layout(int64_t tokens) const;
  MaskGitScheduleConfig config_;
};  ///< MaskGIT (and MAGNeT's span masking): iterative parallel decoding of masked tokens.

}  // namespace tessera
