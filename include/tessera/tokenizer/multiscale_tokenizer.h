#pragma once
// What the next-scale schedules (VAR's NextScaleSchedule, HMAR's HmarSchedule) need of a
// multi-scale residual tokenizer beyond the Tokenizer interface: the running reconstruction f̂
// that each generated scale adds to, and the next scale's input read from it (Note [Multi-scale
// residual quantisation] in multiscale_vq_vae.h). A schedule reaches it through
// Tokenizer::as_multiscale(), so it depends on this interface, not on a concrete tokenizer.
//
//   MultiScaleTokenizer& ms = *models.tokenizer->as_multiscale();
//   at::Tensor f_hat = ms.empty_f_hat(B);
//   for (s = 0; s < S; ++s) {
//     input = s == 0 ? sos : ms.next_scale_input(f_hat, s);   // [B, pn_s², C]
//     ids = draw(...);  ms.add_scale_ids(f_hat, s, ids);
//   }

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tessera {

class MultiScaleTokenizer {
 public:
  virtual ~MultiScaleTokenizer() = default;

  /// The square side of each scale's token grid, coarse to fine.
  virtual const std::vector<int64_t>& patch_nums() const = 0;
  /// f̂ before any scale: zeros [B, C, P, P].
  virtual at::Tensor empty_f_hat(int64_t batch_size) const = 0;
  /// f̂ += scale `scale`'s contribution of ids int64 [B, pn_s²], in place.
  virtual void add_scale_ids(at::Tensor& f_hat, int64_t scale, const at::Tensor& ids) = 0;
  /// The input for predicting scale `scale` from f̂: [B, pn_scale², C].
  virtual at::Tensor next_scale_input(const at::Tensor& f_hat, int64_t scale) const = 0;
  /// Teacher forcing: every scale's input from the ground-truth ids of the scales before it,
  /// concatenated: float [B, L − pn_0², C].
  virtual at::Tensor teacher_forcing_input(const std::vector<at::Tensor>& ids) = 0;

 protected:
  MultiScaleTokenizer() = default;  ///< For implementations (an interface, never made alone).
  MultiScaleTokenizer(const MultiScaleTokenizer&) = default;  ///< Copyable by implementations.
  MultiScaleTokenizer& operator=(const MultiScaleTokenizer&) = default;  ///< Likewise.
};  ///< The f̂ operations of a multi-scale residual tokenizer (VAR's), for next-scale schedules.

}  // namespace tessera
