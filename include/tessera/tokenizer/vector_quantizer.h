#pragma once
// A single-scale vector quantiser: each latent vector is replaced by its nearest codebook entry.
//
// Note [Straight-through quantisation]
// Quantising is not differentiable, so the forward pass returns z + sg[e − z]: its value is the
// code e, its gradient with respect to z the identity (van den Oord et al. 2017). The codebook
// learns either from the gradient of ‖sg[z] − e‖² or, with codebook_update "ema", as the moving
// average of the vectors assigned to each code (each step: N ← d·N + (1−d)·n,
// S ← d·S + (1−d)·Σz, e = S / N̂ with N̂ the Laplace-smoothed counts; N starts at 1 and S at the
// initial codes, so a code nobody picks keeps its value). The encoder is pulled towards its codes
// by the commitment term β‖z − sg[e]‖². With l2_normalized_codes (LlamaGen) both z and the codes
// are projected onto the unit sphere first, and all of the above happens there.
//
// Training mode also keeps a moving average of hits per code and step, and restarts dead codes
// from the batch's vectors (see DeadCodeRestartConfig).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera {

namespace tokenizer_detail {
class VectorQuantizerModule;
}

struct VectorQuantizerOutput {
  at::Tensor quantized{};  ///< [B, C, h, w]: the codes, with the straight-through gradient to z
  at::Tensor ids{};        ///< int64 [B, h*w], raster order
  at::Tensor loss{};  ///< codebook_weight·‖sg[z] − e‖² + β·‖z − sg[e]‖² (means), scalar
  double codebook_loss = 0;    ///< ‖sg[z] − e‖² (mean; 0 for EMA codebooks)
  double commitment_loss = 0;  ///< ‖z − sg[e]‖² (mean, before β)
  int64_t restarted_codes = 0;  ///< dead codes restarted by this call
};  ///< What VectorQuantizer::forward returns.

class VectorQuantizer {
 public:
  /// The codebook starts uniform in ±1/V (taming-transformers' init); `seed` drives the
  /// initialisation and dead-code restarts.
  explicit VectorQuantizer(const VectorQuantizerConfig& config, uint64_t seed = 0);
  ~VectorQuantizer();
  VectorQuantizer(VectorQuantizer&&) noexcept;  ///< Moves; the source is not usable afterwards.
  VectorQuantizer& operator=(VectorQuantizer&&) noexcept;  ///< Moves, as the constructor.

  /// z: float [B, code_dim, h, w]. Updates EMA codebooks and hit counts in training mode.
  VectorQuantizerOutput forward(const at::Tensor& z);
  /// ids [B, h, w] -> codes [B, C, h, w]; throws tessera::Error for ids outside the codebook.
  at::Tensor lookup(const at::Tensor& ids) const;

  /// The codes in use, [V, C] (unit rows when l2_normalized_codes).
  at::Tensor codebook() const;
  /// Overwrites the stored codebook [V, C] (and the EMA sums consistently).
  void set_codebook(const at::Tensor& codes);
  /// Moving average of hits per code per training step, [V].
  at::Tensor code_hits_ema() const;

  void set_training(bool training);  ///< Training mode (EMA updates, hit counts) on or off.
  std::vector<at::Tensor> parameters() const;  ///< Trainable parameters.
  std::map<std::string, at::Tensor> state_dict() const;  ///< Parameters and buffers by name.
  const VectorQuantizerConfig& config() const;  ///< The configuration it was built from.

 private:
  std::shared_ptr<tokenizer_detail::VectorQuantizerModule> module_;
};  ///< A single-scale vector quantiser with its codebook (VQ-VAE, LlamaGen).

}  // namespace tessera
