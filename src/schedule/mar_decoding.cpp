#include "schedule/mar_decoding.h"

#include <algorithm>
#include <cmath>

#include "schedule/schedule_util.h"
#include "tessera/core/numpy_random.h"

namespace tessera::schedule_detail {

at::Tensor mar_inputs(const at::Tensor& tokens, const at::Tensor& mask) {
  const at::Tensor m = mask.unsqueeze(-1);
  return at::cat(
      {at::where(m, at::zeros({}, tokens.options()), tokens), m.to(tokens.scalar_type())}, -1);
}

void check_mar_models(const ScheduleModels& models, int64_t buffer_size, const char* what) {
  const BackboneConfig& c = models.backbone.config();
  TESSERA_CHECK(models.head.kind() != HeadKind::discrete,
                "{}: needs a continuous head (diffusion or flow_matching), got discrete", what);
  TESSERA_CHECK(models.head.hidden_width() == c.width,
                "{}: the head expects hidden width {}, the backbone has {}", what,
                models.head.hidden_width(), c.width);
  const int64_t C = models.head.token_channels();
  TESSERA_CHECK(c.input == InputKind::vectors && c.input_channels == C + 1,
                "{}: the backbone must take vectors of {} channels (the head's {} token channels "
                "plus the mask indicator, Note [MAR mask inputs]), got {}",
                what, C + 1, C,
                backbone_input_text(c));
  TESSERA_CHECK(c.condition_tokens == buffer_size,
                "{}: configured for a buffer of {} condition tokens, the backbone has {}", what,
                buffer_size, c.condition_tokens);
}

void check_mar_encoder_decoder(const ScheduleModels& models, int64_t buffer_size,
                               const TokenLayout& layout, const char* what) {
  TESSERA_CHECK(models.decoder != nullptr,
                "{}: encoder_decoder is set but no decoder backbone was given (GeneratorConfig's "
                "'decoder', see mar_decoder_config)",
                what);
  const BackboneConfig& e = models.backbone.config();
  const BackboneConfig& d = models.decoder->config();
  const int64_t C = models.head.token_channels();
  TESSERA_CHECK(models.head.kind() != HeadKind::discrete,
                "{}: needs a continuous head (diffusion or flow_matching), got discrete", what);
  TESSERA_CHECK(buffer_size >= 1,
                "{}: the encoder–decoder split needs buffer_size >= 1 (the class enters through "
                "the encoder's buffer rows)",
                what);
  TESSERA_CHECK(e.input == InputKind::vectors && e.input_channels == C,
                "{}: the encoder must take vectors of the head's {} token channels (no mask "
                "indicator: masked tokens never reach it), got {}",
                what, C,
                backbone_input_text(e));
  TESSERA_CHECK(e.condition_tokens == buffer_size,
                "{}: configured for a buffer of {} condition tokens, the encoder has {}", what,
                buffer_size, e.condition_tokens);
  TESSERA_CHECK(d.input == InputKind::vectors && d.input_channels == e.width + 1,
                "{}: the decoder must take vectors of {} channels (the encoder's width {} plus "
                "the mask indicator), got {}",
                what, e.width + 1, e.width,
                backbone_input_text(d));
  TESSERA_CHECK(d.num_classes == 0 && d.condition_tokens == 0,
                "{}: the decoder must be unconditional with no condition positions (its buffer "
                "rows carry the encoder's outputs), got num_classes {} and condition_tokens {}",
                what, d.num_classes, d.condition_tokens);
  TESSERA_CHECK(models.head.hidden_width() == d.width,
                "{}: the head expects hidden width {}, the decoder has {}", what,
                models.head.hidden_width(), d.width);
  TESSERA_CHECK(models.backbone.layout() == layout && models.decoder->layout() == layout,
                "{}: the encoder's and the decoder's segments must be {}, got {} and {}", what,
                layout.to_string(), models.backbone.layout().to_string(),
                models.decoder->layout().to_string());
}

// Note [MAR encoder–decoder split]: the encoder on the buffer and visible rows, the decoder on
// every row.
MarEncoderDecoderOutputs encoder_decoder_forward(const ScheduleModels& models,
                                                 const at::Tensor& tokens, const at::Tensor& mask,
                                                 const at::Tensor& labels, const MarCall& call,
                                                 const BackboneForwardOptions& options) {
  TESSERA_CHECK(!call.prefix.defined(), "mar encoder–decoder: a prefix is not supported");
  Backbone& encoder = models.backbone;
  Backbone& decoder = *models.decoder;
  const int64_t B = tokens.size(0), N = tokens.size(1), C = tokens.size(2);
  const int64_t c = call.first_row, We = encoder.width();
  const at::Tensor visible = mask.logical_not();
  const at::Tensor counts = visible.sum(1);
  const int64_t V = counts[0].item<int64_t>();
  TESSERA_CHECK(counts.eq(V).all().item<bool>(),
                "mar encoder–decoder: every sample of a call must have the same number of "
                "visible tokens, got {}",
                counts.sizes());
  const at::TensorOptions index = tokens.options().dtype(at::kLong);
  // Visible positions in increasing order, [B, V]; the encoder's rows are buffer + visible.
  const at::Tensor visible_positions = visible.nonzero().select(1, 1).view({B, V});
  const at::Tensor rows =
      at::cat({at::arange(c, index).expand({B, c}), visible_positions + c}, 1);  // [B, c + V]
  const at::Tensor encoder_inputs =
      at::cat({at::zeros({B, c, C}, tokens.options()),
               tokens.gather(1, visible_positions.unsqueeze(-1).expand({B, V, C}))},
              1);
  BackboneForwardOptions encoder_options = options;
  encoder_options.positions = rows;
  const at::Tensor encoded =
      encoder
          .forward(encoder_inputs, labels, BlockMask::bidirectional(TokenLayout({c + V})),
                   encoder_options)
          .hidden;  // [B, c + V, We]
  // Decoder inputs: [encoded, 0] at the buffer and visible rows, [0, …, 0, 1] at masked rows.
  const at::Tensor masked_rows = at::cat(
      {at::zeros({B, c, We + 1}, encoded.options()),
       at::cat({at::zeros({B, N, We}, encoded.options()),
                mask.unsqueeze(-1).to(encoded.scalar_type())},
               -1)},
      1);
  const at::Tensor decoder_inputs = masked_rows.scatter(
      1, rows.unsqueeze(-1).expand({B, c + V, We + 1}),
      at::cat({encoded, at::zeros({B, c + V, 1}, encoded.options())}, -1));
  BackboneForwardOptions decoder_options = options;
  decoder_options.positions = at::Tensor();
  const at::Tensor decoded =
      decoder.forward(decoder_inputs, at::Tensor(), *call.call_mask, decoder_options).hidden;
  return {encoded, decoded.slice(1, c, c + N)};
}

at::Tensor mar_token_hidden(const ScheduleModels& models, const at::Tensor& tokens,
                            const at::Tensor& mask, const at::Tensor& labels, const MarCall& call,
                            const BackboneForwardOptions& options) {
  if (models.decoder != nullptr)
    return encoder_decoder_forward(models, tokens, mask, labels, call, options).hidden;
  at::Tensor inputs = mar_inputs(tokens, mask);
  if (call.prefix.defined()) inputs = at::cat({call.prefix, inputs}, 1);
  const at::Tensor hidden =
      models.backbone.forward(inputs, labels, *call.call_mask, options).hidden;
  return hidden.slice(1, call.first_row, call.first_row + tokens.size(1));
}

at::Tensor mask_by_order(const at::Tensor& orders, int64_t count) {
  at::Tensor mask = at::zeros(orders.sizes(), orders.options().dtype(at::kBool));
  if (count > 0) mask.scatter_(1, orders.slice(1, 0, count), true);
  return mask;
}

at::Tensor mar_training_mask(int64_t batch, int64_t tokens, double ratio,
                             at::Generator& generator) {
  const int64_t count = std::clamp<int64_t>(
      static_cast<int64_t>(std::ceil(static_cast<double>(tokens) * ratio)), 1, tokens);
  return mask_by_order(random_orders(batch, tokens, generator), count);
}

at::Tensor mar_decode(const ScheduleModels& models, const at::Tensor& run_labels,
                      const GenerationOptions& options, const CheckedHeadOptions& head,
                      SampleRngs& rngs, const MarPhase& phase) {
  const at::Device device = models.backbone.device();
  const int64_t B = rngs.size(), N = phase.tokens, C = phase.channels;
  const int64_t W = models.head.hidden_width();
  TESSERA_CHECK(phase.steps >= 1 && phase.steps <= N,
                "masked decoding: {} steps for {} tokens; need 1 <= steps <= tokens", phase.steps,
                N);
  // Each sample's order: the argsort of N uniforms from its own generator; with the reference's
  // shared stream, MAR's sample_orders on numpy's RandomState seeded alike (Note [MAR decoding]).
  const at::Tensor orders =
      (rngs.shares_one_stream() ? numpy_shuffled_ranges(static_cast<uint32_t>(rngs.seed()), B, N)
                                : argsort_rows(rngs.uniform({N})))
          .to(device);
  at::Tensor tokens = at::zeros({B, N, C}, at::TensorOptions().dtype(at::kFloat).device(device));
  at::Tensor mask = at::ones({B, N}, at::TensorOptions().dtype(at::kBool).device(device));
  int64_t masked = N;
  const MarCall call{phase.mask, phase.first_row,
                     phase.prefix.defined() ? maybe_double(phase.prefix, options) : at::Tensor()};
  for (int64_t s = 0; s < phase.steps; ++s) {
    if (masked == 0) break;  // see the same guard in maskgit_schedule.cpp
    const at::Tensor hidden = mar_token_hidden(models, maybe_double(tokens, options),
                                               maybe_double(mask, options), run_labels, call);
    const int64_t rows = hidden.size(0);
    const int64_t mask_len = masked_after_step(phase.curve, N, s, phase.steps, masked);
    const at::Tensor next = mask_by_order(orders, mask_len);
    const at::Tensor predict = mask & ~next;
    const int64_t K = masked - mask_len;  // the same for every sample
    // Positions to predict, increasing, [B, K].
    const at::Tensor positions = predict.nonzero().select(1, 1).view({B, K});
    const at::Tensor rows_index = maybe_double(positions, options);
    const at::Tensor z =
        hidden.gather(1, rows_index.unsqueeze(-1).expand({rows, K, W})).reshape({rows * K, W});
    HeadStep step;
    step.progress.step = phase.step_offset + s;
    step.progress.num_steps = phase.total_steps;
    step.progress.num_tokens = N;
    // MAR's mask_len, which feeds its guidance ramp, is at least 1 even at the last step, where
    // every token still masked is predicted (Note [MAR decoding]).
    step.progress.masked_after_step = std::max<int64_t>(mask_len, 1);
    HeadSample drawn = head.draw(models.head, z, rngs, step);
    tokens.scatter_(1, positions.unsqueeze(-1).expand({B, K, C}),
                    drawn.values.to(device, at::kFloat).view({B, K, C}));
    mask = next;
    masked = mask_len;
  }
  return tokens;
}

}  // namespace tessera::schedule_detail
