#pragma once
// Guidance batching: the conditional and unconditional halves of classifier-free guidance run as
// one doubled batch through the backbone.
//
// The layout is the one of Note [Guidance batch layout] in tessera/head/guidance.h: rows [0, B)
// are the conditional samples, rows [B, 2B) the same samples with the null class. The backbone
// only needs the doubled inputs and labels; combining the two predictions (u + w·(c − u) and the
// schedule of w) is the head's (apply_guidance, Guidance in head/guidance.h). The KV cache of a
// guided generation is made for 2B rows.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tessera {

/// [2B]: the labels, then B copies of `null_class`.
at::Tensor guidance_labels(const at::Tensor& labels, int64_t null_class);

/// [2B, ...]: the batch twice (both halves see the same inputs). Undefined stays undefined.
at::Tensor repeat_for_guidance(const at::Tensor& batch);

struct GuidanceHalves {
  at::Tensor conditional;    ///< rows [0, B)
  at::Tensor unconditional;  ///< rows [B, 2B)
};  ///< The two halves of a guidance-doubled batch.

/// The halves of a doubled batch (views); throws tessera::Error naming `what` when the first
/// dimension is odd.
GuidanceHalves split_guidance_halves(const at::Tensor& doubled, const char* what = "batch");

/// The inverse of split_guidance_halves: [conditional; unconditional] along dimension 0.
at::Tensor join_guidance_halves(const at::Tensor& conditional, const at::Tensor& unconditional);

}  // namespace tessera
