#pragma once
// VAR's multi-scale VQ-VAE (FoundationVision/VAR, models/vqvae.py and models/quant.py): a
// convolutional autoencoder whose latent is quantised as a pyramid of residual token maps.
//
// Note [Multi-scale residual quantisation]
// With f = quant_conv(encoder(image)) of side P = patch_nums.back() and S scales of sides
// pn_0 < ... < pn_{S−1} = P, encoding runs coarse to fine on the residual r (r = f at first):
//   ids_s   = nearest codes of area_down(r, pn_s)      (the last scale uses r itself)
//   h_s     = Phi_s(bicubic_up(embed(ids_s), P))       (the last scale is not resized)
//   f̂ += h_s,  r −= h_s
// Decoding replays the second line for every scale and returns decoder(post_quant_conv(f̂))
// clamped to [−1, 1]. A next-scale model (VAR, HMAR) predicting scale s+1 sees
// area_down(f̂ after scale s, pn_{s+1}) as its input: teacher_forcing_input() builds that for all
// scales at once from ground-truth ids, next_scale_input() one scale at a time while sampling.
// Training (training_forward) runs the same loop with gradients: the loss is the mean over scales
// of β‖sg[f̂_s] − f‖² + ‖f̂_s − sg[f]‖², and the decoder sees f̂ with the straight-through gradient
// of f.
//
// Note [Choosing Phi]
// Phi(h) = (1 − r)·h + r·conv3x3(h) with r = |phi_residual_ratio| (0.5). Scale s uses the Phi whose
// tick is nearest to s/(S−1): with K Phis the ticks are linspace(1/(3K), 1 − 1/(3K), K) for K = 4
// (1/12, 13/36, 23/36, 11/12) and linspace(1/(2K), 1 − 1/(2K), K) for any other K; the nearest is
// numpy's argmin in float64 (first index on an exact tie — and 0.5 is not an exact tie for K = 4:
// in floating point 23/36 is the nearer, so S = 3 uses Phis 0, 2, 3). phi_count 0 means one Phi per
// scale (K = S), 1 one Phi for all. A single scale would divide by zero (the reference raises), so
// S >= 2 is required; see Note [One scale] in tokenizer_config.cpp.
//
// Module and parameter names are the reference's, so VAR's own vae checkpoints load by name (see
// tessera/compat/var_vae.h).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/multiscale_tokenizer.h"
#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

namespace tokenizer_detail {
class MultiScaleVqVaeModule;
}

/// The K ticks of Note [Choosing Phi], bit-identical to the reference's np.linspace.
std::vector<double> var_phi_ticks(int64_t num_phis);
/// The index of the Phi that scale `scale` of `num_scales` uses, for VAR's phi_count
/// (share_quant_resi). Throws tessera::Error for num_scales < 2 or a scale out of range.
int64_t var_phi_index(int64_t scale, int64_t num_scales, int64_t phi_count);

class MultiScaleVqVae final : public Tokenizer, public MultiScaleTokenizer {
 public:
  /// Fresh parameters (convolutions with torch's default initialisation, the codebook uniform in
  /// ±1/V); `seed` drives them and dead-code restarts.
  explicit MultiScaleVqVae(const MultiScaleVqVaeConfig& config, uint64_t seed = 0);
  ~MultiScaleVqVae() override;
  MultiScaleVqVae(MultiScaleVqVae&&) noexcept;  ///< Moves; the source is not usable afterwards.
  MultiScaleVqVae& operator=(MultiScaleVqVae&&) noexcept;  ///< Moves, as the constructor.

  // --- Tokenizer ---
  TokenizerConfig config() const override;
  int64_t image_channels() const override;
  int64_t downsampling_factor() const override;
  /// One pn x pn grid per scale; the image must be (pn_last · downsampling) square.
  std::vector<TokenGridSize> token_grids(int64_t image_height, int64_t image_width) const override;
  int64_t vocab_size() const override;
  int64_t token_channels() const override;
  /// img_to_idxBl: ids per scale, int64 [B, pn²].
  Tokens encode(const at::Tensor& images) override;
  /// idxBl_to_img(ids, same_shape=True, last_one=True): images in [−1, 1].
  at::Tensor decode(const Tokens& tokens) override;
  TokenizerTrainingOutput training_forward(const at::Tensor& images) override;
  std::vector<at::Tensor> parameters() const override;
  std::map<std::string, at::Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, at::Tensor>& tensors) override;
  void set_training(bool training) override;
  bool is_training() const override;
  void to(at::Device device) override;
  at::Device device() const override;
  MultiScaleTokenizer* as_multiscale() override { return this; }  ///< This tokenizer's f̂ side.

  // --- the pieces of Note [Multi-scale residual quantisation] (MultiScaleTokenizer's included) ---
  const MultiScaleVqVaeConfig& multiscale_config() const { return config_; }  ///< The config.
  const std::vector<int64_t>& patch_nums() const override { return config_.quantizer.patch_nums; }  ///< Scale sides.
  int64_t num_scales() const { return static_cast<int64_t>(patch_nums().size()); }  ///< Scales.
  /// f = quant_conv(encoder(images)): [B, Cvae, P, P]. Checks the image size (divisible by the
  /// downsampling factor, latent side equal to patch_nums' last entry).
  at::Tensor encode_latent(const at::Tensor& images);
  /// Ids per scale of a latent f [B, Cvae, P, P] (f_to_idxBl_or_fhat with to_fhat false).
  std::vector<at::Tensor> latent_to_ids(const at::Tensor& f);
  /// f̂ after each scale (to_fhat true); the last is the quantised latent.
  std::vector<at::Tensor> latent_to_f_hats(const at::Tensor& f);
  /// f̂ from the ids of every scale (embed_to_fhat, all_to_max_scale, last one).
  at::Tensor ids_to_f_hat(const std::vector<at::Tensor>& ids);
  /// decoder(post_quant_conv(f̂)) clamped to [−1, 1].
  at::Tensor f_hat_to_images(const at::Tensor& f_hat);
  /// idxBl_to_var_input: for s = 0 .. S−2, area_down(f̂ after scale s, pn_{s+1}) flattened, all
  /// concatenated: float [B, L − pn_0², Cvae].
  at::Tensor teacher_forcing_input(const std::vector<at::Tensor>& ids) override;

  /// Sampling one scale at a time (get_next_autoregressive_input):
  ///   f̂ = empty_f_hat(B); for s: add_scale_ids(f̂, s, ids_s); input = next_scale_input(f̂, s + 1)
  at::Tensor empty_f_hat(int64_t batch_size) const override;
  /// f̂ += Phi_s(up(embed(ids))) in place; ids int64 [B, pn_s²] within the codebook.
  void add_scale_ids(at::Tensor& f_hat, int64_t scale, const at::Tensor& ids) override;
  /// The same from embeddings h [B, Cvae, pn_s, pn_s] (e.g. a soft mixture of codes).
  void add_scale_embeddings(at::Tensor& f_hat, int64_t scale, const at::Tensor& h);
  /// area_down(f̂, pn_scale) as [B, pn_scale², Cvae]: the input for predicting scale `scale`.
  at::Tensor next_scale_input(const at::Tensor& f_hat, int64_t scale) const override;
  /// Codes of ids [B, pn_s²] as [B, Cvae, pn_s, pn_s].
  at::Tensor embed_ids(const at::Tensor& ids, int64_t scale);

  at::Tensor codebook() const;  ///< [V, Cvae]
  /// The reference's ema_vocab_hit_SV [S, V]: moving average of each code's hits per scale.
  at::Tensor code_hits_per_scale() const;

 private:
  void check_scale(int64_t scale) const;
  MultiScaleVqVaeConfig config_;
  std::shared_ptr<tokenizer_detail::MultiScaleVqVaeModule> module_;
};  ///< VAR's multi-scale residual VQ-VAE: one token map per scale, coarse to fine.

}  // namespace tessera
