#include "tessera/head/guidance.h"

#include <ATen/ATen.h>

#include <cmath>
#include <numbers>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

double GenerationProgress::fraction() const {
  validate();
  if (num_steps == 1) return 0.0;
  return static_cast<double>(step) / static_cast<double>(num_steps - 1);
}

void GenerationProgress::validate() const {
  TESSERA_CHECK(num_steps >= 1, "generation progress: num_steps must be >= 1, got {}", num_steps);
  TESSERA_CHECK(step >= 0 && step < num_steps,
                "generation progress: step {} is outside [0, {}) (num_steps)", step, num_steps);
  TESSERA_CHECK(num_scales >= 1, "generation progress: num_scales must be >= 1, got {}",
                num_scales);
  TESSERA_CHECK(scale >= 0 && scale < num_scales,
                "generation progress: scale {} is outside [0, {}) (num_scales)", scale, num_scales);
  TESSERA_CHECK(num_tokens >= 0, "generation progress: num_tokens must be >= 0, got {}",
                num_tokens);
  TESSERA_CHECK(masked_after_step >= 0 && masked_after_step <= num_tokens,
                "generation progress: masked_after_step {} is outside [0, {}] (num_tokens)",
                masked_after_step, num_tokens);
}

Guidance Guidance::constant(double scale) {
  Guidance g;
  g.kind = GuidanceKind::constant;
  g.scale = scale;
  g.validate();
  return g;
}

Guidance Guidance::var_scale_ramp(double cfg) {
  Guidance g;
  g.kind = GuidanceKind::var_scale_ramp;
  g.scale = cfg;
  g.validate();
  return g;
}

Guidance Guidance::mar_token_ramp(double cfg) {
  Guidance g;
  g.kind = GuidanceKind::mar_token_ramp;
  g.scale = cfg;
  g.validate();
  return g;
}

Guidance Guidance::cutoff(double scale, int64_t cutoff_step) {
  Guidance g;
  g.kind = GuidanceKind::cutoff;
  g.scale = scale;
  g.cutoff_step = cutoff_step;
  g.validate();
  return g;
}

Guidance Guidance::annealed(double initial_scale, double final_scale) {
  Guidance g;
  g.kind = GuidanceKind::annealed;
  g.scale = initial_scale;
  g.final_scale = final_scale;
  g.validate();
  return g;
}

void Guidance::validate() const {
  TESSERA_CHECK(std::isfinite(scale) && scale >= 0,
                "guidance: scale must be finite and >= 0, got {}", scale);
  TESSERA_CHECK(std::isfinite(final_scale) && final_scale >= 0,
                "guidance: final_scale must be finite and >= 0, got {}", final_scale);
  TESSERA_CHECK(cutoff_step >= 0, "guidance: cutoff_step must be >= 0, got {}", cutoff_step);
}

double Guidance::weight_at(const GenerationProgress& progress) const {
  validate();
  progress.validate();
  switch (kind) {
    case GuidanceKind::none:
      return 1.0;
    case GuidanceKind::constant:
      return scale;
    case GuidanceKind::var_scale_ramp: {
      // VAR: t = cfg·si/(S−1), logits = (1+t)·c − t·u. One scale would divide by zero (VAR has
      // no such pyramid), so it is refused rather than given a made-up ramp.
      TESSERA_CHECK(progress.num_scales >= 2,
                    "guidance var_scale_ramp needs a pyramid of >= 2 scales in the progress, got "
                    "num_scales = {}",
                    progress.num_scales);
      const double ratio =
          static_cast<double>(progress.scale) / static_cast<double>(progress.num_scales - 1);
      return 1.0 + scale * ratio;
    }
    case GuidanceKind::mar_token_ramp: {
      // MAR: 1 + (cfg − 1)·(seq_len − mask_len)/seq_len, mask_len = tokens masked after the step.
      TESSERA_CHECK(progress.num_tokens >= 1,
                    "guidance mar_token_ramp needs num_tokens >= 1 in the progress, got {}",
                    progress.num_tokens);
      const auto n = static_cast<double>(progress.num_tokens);
      return 1.0 + (scale - 1.0) * (n - static_cast<double>(progress.masked_after_step)) / n;
    }
    case GuidanceKind::cutoff:
      return progress.step < cutoff_step ? scale : 1.0;
    case GuidanceKind::annealed: {
      // MAGNeT: τ = linspace(0, 1, T)[step], m = cos(π/2·τ), coef = m·max + (1 − m)·min.
      const double m = std::cos(progress.fraction() * std::numbers::pi * 0.5);
      return m * scale + (1.0 - m) * final_scale;
    }
  }
  TESSERA_FAIL("guidance: unknown kind {}", static_cast<int>(kind));
}

at::Tensor apply_guidance(const at::Tensor& cond, const at::Tensor& uncond, double weight) {
  if (weight == 1.0) return cond;
  TESSERA_CHECK(cond.sizes() == uncond.sizes(),
                "guidance: conditional and unconditional predictions differ in shape: {} vs {}",
                cond.sizes(), uncond.sizes());
  return uncond + (cond - uncond) * weight;
}

std::pair<at::Tensor, at::Tensor> split_guidance_batch(const at::Tensor& batch, const char* what) {
  TESSERA_CHECK(batch.defined() && batch.dim() >= 1 && batch.size(0) % 2 == 0,
                "{}: under guidance the batch holds a conditional and an unconditional half, so "
                "its row count must be even; got {}",
                what, batch.defined() ? fmt::format("{}", batch.sizes()) : std::string("undefined"));
  const int64_t half = batch.size(0) / 2;
  return {batch.narrow(0, 0, half), batch.narrow(0, half, half)};
}

}  // namespace tessera
