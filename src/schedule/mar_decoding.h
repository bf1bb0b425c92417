#pragma once
// MAR's masked decoding loop, shared by MarSchedule and HiMarSchedule (both of its phases).
// See Note [MAR decoding] in tessera/schedule/mar_schedule.h. Internal to src/schedule.

#include <ATen/ATen.h>

#include <cstdint>

#include "tessera/attention/block_mask.h"
#include "tessera/schedule/mar_schedule.h"
#include "tessera/schedule/masking.h"
#include "tessera/schedule/schedule.h"

namespace tessera::schedule_detail {

// [B, N, C + 1]: masked rows become [0, …, 0, 1], known rows [value, 0]. See Note [MAR mask
// inputs].
at::Tensor mar_inputs(const at::Tensor& tokens, const at::Tensor& mask);

// What MAR and Hi-MAR require of their models: a continuous head over the backbone's width, a
// backbone that takes the head's token vectors plus the mask indicator (Note [MAR mask inputs]),
// and `buffer_size` condition tokens. `what` names the schedule in the errors.
void check_mar_models(const ScheduleModels& models, int64_t buffer_size, const char* what);

// The same for MAR's encoder–decoder split (Note [MAR encoder–decoder split]), the layouts
// included: both stacks must have segments `layout`.
void check_mar_encoder_decoder(const ScheduleModels& models, int64_t buffer_size,
                               const TokenLayout& layout, const char* what);

// Per sample, the first `count` positions of `orders` [B, N] set: bool [B, N] (MAR's
// mask_by_order).
at::Tensor mask_by_order(const at::Tensor& orders, int64_t count);

// The training mask of one batch: bool [B, N], the first clamp(⌈N·ratio⌉, 1, N) positions of each
// row's random order (orders drawn from `generator`), as MAR's random_masking.
at::Tensor mar_training_mask(int64_t batch, int64_t tokens, double ratio, at::Generator& generator);

// The hidden rows the head reads for the N tokens of a call, [rows, N, head width], for tokens
// [rows, N, C] and mask bool [rows, N] (true: masked; its value never reaches a model).
//   one stack (models.decoder null): models.backbone over `prefix` (inputs [rows, P, C + 1] before
//     the tokens, or undefined) and the tokens as mar_inputs, under `call_mask`; the token rows
//     start at `first_row`.
//   encoder–decoder: Note [MAR encoder–decoder split]; `first_row` is the buffer size, `prefix`
//     must be undefined and `call_mask` is the decoder's.
// `options` (the training generator) is passed to every backbone call.
struct MarCall {
  const BlockMask* call_mask = nullptr;
  int64_t first_row = 0;
  at::Tensor prefix{};
};
at::Tensor mar_token_hidden(const ScheduleModels& models, const at::Tensor& tokens,
                            const at::Tensor& mask, const at::Tensor& labels, const MarCall& call,
                            const BackboneForwardOptions& options = {});

// The encoder–decoder case of mar_token_hidden, with the encoder's outputs too.
MarEncoderDecoderOutputs encoder_decoder_forward(const ScheduleModels& models,
                                                 const at::Tensor& tokens, const at::Tensor& mask,
                                                 const at::Tensor& labels, const MarCall& call,
                                                 const BackboneForwardOptions& options = {});

struct MarPhase {
  int64_t tokens = 0;    // N: tokens generated in this phase
  int64_t channels = 0;  // C
  int64_t steps = 1;
  MaskingCurve curve = MaskingCurve::cosine;
  int64_t step_offset = 0;          // GenerationProgress::step of this phase's first step
  int64_t total_steps = 1;          // GenerationProgress::num_steps
  const BlockMask* mask = nullptr;  // the mask of each backbone call (its query rows = the call)
  int64_t first_row = 0;            // the call's row of the phase's first token
  at::Tensor prefix{};              // [B, P, C + 1] inputs before the phase's tokens, or undefined
};

// Runs a phase; returns the tokens [B, N, C]. `head` is the request's validated guidance and head
// options (Schedule::sample).
at::Tensor mar_decode(const ScheduleModels& models, const at::Tensor& run_labels,
                      const GenerationOptions& options, const CheckedHeadOptions& head,
                      SampleRngs& rngs, const MarPhase& phase);

}  // namespace tessera::schedule_detail
