#include "tessera/nn/guidance_batch.h"

#include <ATen/ATen.h>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

at::Tensor guidance_labels(const at::Tensor& labels, int64_t null_class) {
  TESSERA_CHECK(labels.defined() && labels.dim() == 1 && !at::isFloatingType(labels.scalar_type()),
                "guidance_labels: labels must be an integer tensor [B]");
  return at::cat({labels, at::full_like(labels, null_class)}, 0);
}

at::Tensor repeat_for_guidance(const at::Tensor& batch) {
  if (!batch.defined()) return batch;
  TESSERA_CHECK(batch.dim() >= 1, "repeat_for_guidance: expected a batch with a first dimension");
  return at::cat({batch, batch}, 0);
}

GuidanceHalves split_guidance_halves(const at::Tensor& doubled, const char* what) {
  TESSERA_CHECK(doubled.defined() && doubled.dim() >= 1 && doubled.size(0) % 2 == 0,
                "split_guidance_halves: the {} must have an even number of rows (conditional "
                "half, then unconditional half), got shape {}",
                what, doubled.defined() ? doubled.sizes() : at::IntArrayRef{});
  const int64_t half = doubled.size(0) / 2;
  return {doubled.slice(0, 0, half), doubled.slice(0, half, 2 * half)};
}

at::Tensor join_guidance_halves(const at::Tensor& conditional, const at::Tensor& unconditional) {
  TESSERA_CHECK(conditional.defined() && unconditional.defined() &&
                    conditional.sizes() == unconditional.sizes(),
                "join_guidance_halves: the halves must have equal shapes, got {} and {}",
                conditional.defined() ? conditional.sizes() : at::IntArrayRef{},
                unconditional.defined() ? unconditional.sizes() : at::IntArrayRef{});
  return at::cat({conditional, unconditional}, 0);
}

}  // namespace tessera
