#include "mar_decoding.h"

#include <algorithm>
#include <cmath>

#include "schedule_util.h"

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
                c.input == InputKind::vectors ? fmt::format("{} channels", c.input_channels)
                                              : std::string("token ids"));
  TESSERA_CHECK(c.condition_tokens == buffer_size,
                "{}: configured for a buffer of {} condition tokens, the backbone has {}", what,
                buffer_size, c.condition_tokens);
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
                      const GenerationOptions& options, SampleRngs& rngs, const MarPhase& phase) {
  Backbone& backbone = models.backbone;
  const at::Device device = backbone.device();
  const int64_t B = rngs.size(), N = phase.tokens, C = phase.channels, W = backbone.width();
  TESSERA_CHECK(phase.steps >= 1 && phase.steps <= N,
                "masked decoding: {} steps for {} tokens; need 1 <= steps <= tokens", phase.steps,
                N);
  // Each sample's order: the argsort of N uniforms from its own generator.
  const at::Tensor orders = argsort_rows(rngs.uniform({N})).to(device);
  at::Tensor tokens = at::zeros({B, N, C}, at::TensorOptions().dtype(at::kFloat).device(device));
  at::Tensor mask = at::ones({B, N}, at::TensorOptions().dtype(at::kBool).device(device));
  int64_t masked = N;
  for (int64_t s = 0; s < phase.steps; ++s) {
    if (masked == 0) break;  // see the same guard in maskgit_schedule.cpp
    at::Tensor inputs = mar_inputs(tokens, mask);
    if (phase.prefix.defined()) inputs = at::cat({phase.prefix, inputs}, 1);
    BackboneOutput out = backbone.forward(maybe_double(inputs, options), run_labels, *phase.mask);
    const int64_t rows = out.hidden.size(0);
    const at::Tensor hidden = out.hidden.slice(1, phase.first_row, phase.first_row + N);
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
    step.progress.masked_after_step = mask_len;
    HeadSample drawn = models.head.sample(z, options.guidance, options.head, rngs, step);
    tokens.scatter_(1, positions.unsqueeze(-1).expand({B, K, C}),
                    drawn.values.to(device, at::kFloat).view({B, K, C}));
    mask = next;
    masked = mask_len;
  }
  return tokens;
}

}  // namespace tessera::schedule_detail
