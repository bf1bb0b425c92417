#include "tessera/schedule/masking.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

double masked_fraction(MaskingCurve curve, double progress) {
  TESSERA_CHECK(progress >= 0.0 && progress <= 1.0,
                "masking curve: progress must be in [0, 1], got {}", progress);
  const double r = progress;
  switch (curve) {
    case MaskingCurve::cosine:
      return std::cos(std::numbers::pi / 2 * r);
    case MaskingCurve::arccos:
      return std::acos(r) / (std::numbers::pi / 2);
    case MaskingCurve::linear:
      return 1.0 - r;
    case MaskingCurve::square:
      return 1.0 - r * r;
    case MaskingCurve::cubic:
      return 1.0 - r * r * r;
    case MaskingCurve::sqrt:
      return 1.0 - std::sqrt(r);
  }
  TESSERA_CHECK(false, "masking curve: unknown curve {}", static_cast<int>(curve));
  return 0.0;
}

int64_t masked_after_step(MaskingCurve curve, int64_t num_tokens, int64_t step, int64_t num_steps,
                          int64_t masked_before) {
  TESSERA_CHECK(num_tokens >= 1, "masked decoding: num_tokens must be >= 1, got {}", num_tokens);
  TESSERA_CHECK(num_steps >= 1, "masked decoding: steps must be >= 1, got {}", num_steps);
  TESSERA_CHECK(step >= 0 && step < num_steps,
                "masked decoding: step {} is outside [0, {})", step, num_steps);
  TESSERA_CHECK(masked_before >= 1 && masked_before <= num_tokens,
                "masked decoding: {} positions masked before step {}, expected 1..{}",
                masked_before, step, num_tokens);
  if (step == num_steps - 1) return 0;
  const double fraction =
      masked_fraction(curve, static_cast<double>(step + 1) / static_cast<double>(num_steps));
  const auto target = static_cast<int64_t>(std::floor(static_cast<double>(num_tokens) * fraction));
  // max(1, min(masked_before − 1, target)); with one position left it is committed now.
  return std::max<int64_t>(std::min<int64_t>(masked_before - 1, target),
                           masked_before > 1 ? 1 : 0);
}

at::Tensor lowest_confidence(const at::Tensor& confidence, const at::Tensor& candidates,
                             int64_t count) {
  TESSERA_CHECK(confidence.dim() == 2, "lowest_confidence: confidence must be [B, N], got {}",
                confidence.sizes());
  TESSERA_CHECK(candidates.sizes() == confidence.sizes() && candidates.scalar_type() == at::kBool,
                "lowest_confidence: candidates must be bool {}, got {} {}", confidence.sizes(),
                candidates.scalar_type(), candidates.sizes());
  TESSERA_CHECK(count >= 0, "lowest_confidence: count must be >= 0, got {}", count);
  const int64_t fewest = confidence.size(0) == 0
                             ? count
                             : candidates.sum(1).min().item<int64_t>();
  TESSERA_CHECK(fewest >= count,
                "lowest_confidence: a row has {} candidates, fewer than the {} to choose", fewest,
                count);
  at::Tensor chosen = at::zeros_like(candidates);
  if (count == 0) return chosen;
  // Non-candidates rank last; a stable ascending sort breaks ties by position.
  const at::Tensor ranked = at::where(candidates, confidence.to(at::kDouble),
                                      at::full({}, INFINITY, confidence.options().dtype(at::kDouble)));
  const at::Tensor order = std::get<1>(ranked.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
  chosen.scatter_(1, order.slice(1, 0, count), true);
  return chosen;
}

}  // namespace tessera
