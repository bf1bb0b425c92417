#pragma once
// Internal helpers of the next-scale schedules (next_scale_schedule.cpp, hmar_schedule.cpp).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/attention/token_layout.h"
#include "tessera/schedule/next_scale_common.h"
#include "tessera/schedule/schedule.h"
#include "tessera/tokenizer/multiscale_tokenizer.h"

namespace tessera::schedule_detail {

// The multi-scale interface of models.tokenizer (Tokenizer::as_multiscale); throws naming `who`
// when there is no tokenizer or it has none.
MultiScaleTokenizer& multiscale_tokenizer(const ScheduleModels& models, const char* who);

// The square sides of the grids; throws unless every grid is square and the sides increase.
std::vector<int64_t> pyramid_sides(const std::vector<TokenGridSize>& grids, const char* who);
TokenLayout pyramid_layout(const std::vector<TokenGridSize>& grids, const char* who);

// The checks both schedules share (Note [Next-scale layout]); `extra_channels` lists how many
// channels beyond Cvae the backbone's input may have ({0} for VAR, {0, 1} for HMAR).
void check_next_scale_models(const ScheduleModels& models, const std::vector<TokenGridSize>& grids,
                             const char* who, const std::vector<int64_t>& extra_channels);

// The head's AdaLN condition rows for hidden [R, n, W]: condition [R, D] repeated per position
// ([R·n, D]), or undefined for a head that takes none (a linear projection).
at::Tensor head_condition_rows(const Head& head, const at::Tensor& condition, int64_t positions);

// Per-scale weighted cross-entropy over hidden [B, L, W] (the whole pyramid) and ids per scale.
// `scale_weights`: each scale's total weight (see scale_loss_weights). `row_weights` (optional,
// one float [B, n_s] per scale): only rows of positive weight count, the scale's loss their
// weighted mean, and scales are combined by the sum of their row weights instead of
// `scale_weights` (every predicted row the same weight).
ScheduleLoss pyramid_cross_entropy(Head& head, const at::Tensor& hidden,
                                   const at::Tensor& condition, const std::vector<at::Tensor>& ids,
                                   const TokenLayout& layout,
                                   const std::vector<double>& scale_weights,
                                   const std::vector<at::Tensor>& row_weights = {});

// Ground-truth ids of a training batch, checked (discrete, one per grid, same batch).
std::vector<at::Tensor> batch_ids(const TrainingBatch& batch, const char* who);

// The teacher-forcing inputs [B, L − n_0, Cvae]: batch.scale_inputs when given (checked), else the
// tokenizer's teacher_forcing_input(ids); without autograd into the tokenizer.
at::Tensor teacher_forcing_inputs(const ScheduleModels& models, const TrainingBatch& batch,
                                  const std::vector<at::Tensor>& ids, const TokenLayout& layout,
                                  const char* who);

// Labels for a sampling call: checks them against rngs and the backbone, and returns the labels
// the backbone runs with ([2B] under guidance).
struct SamplingLabels {
  int64_t batch = 0;
  at::Tensor labels{};      // [B] or undefined
  at::Tensor run_labels{};  // [B] or [2B] (guidance) or undefined
};
SamplingLabels sampling_labels(const Backbone& backbone, const at::Tensor& labels,
                               const Guidance& guidance, const SampleRngs& rngs, const char* who);

}  // namespace tessera::schedule_detail
