#pragma once
// The coefficient tables of a Gaussian diffusion process (DDPM, Ho et al. 2020; IDDPM, Nichol &
// Dhariwal 2021), as MAR uses them (LTH14/mar diffusion/: gaussian_diffusion.py, respace.py).
// Tables are float64, as the reference computes them; the sampler multiplies float32 tensors by
// these scalars.

#include <cstdint>
#include <vector>

#include "tessera/head/head_config.h"

namespace tessera {

/// β_0 .. β_{T−1}. linear: linspace(1e-4·1000/T, 0.02·1000/T, T) (Ho et al., extended to any T).
/// cosine: β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999) with ᾱ(t) = cos((t + 0.008)/1.008·π/2)².
std::vector<double> diffusion_betas(BetaSchedule schedule, int64_t num_steps);

/// IDDPM's space_timesteps with a single section: `count` timesteps of [0, num_steps), evenly
/// strided by (num_steps − 1)/(count − 1) and rounded half to even (Python's round), ascending.
/// Throws tessera::Error unless 1 <= count <= num_steps.
std::vector<int64_t> respaced_timesteps(int64_t num_steps, int64_t count);

/// One (possibly respaced) process: K steps, each mapped to the training timestep the model sees.
class GaussianDiffusion {
 public:
  /// The training process: `num_steps` steps of the named schedule.
  static GaussianDiffusion training(BetaSchedule schedule, int64_t num_steps);
  /// The training process respaced to `count` steps (IDDPM's SpacedDiffusion): keep the ᾱ of
  /// respaced_timesteps(num_steps, count), β'_k = 1 − ᾱ_{t_k}/ᾱ_{t_{k−1}}.
  static GaussianDiffusion respaced(BetaSchedule schedule, int64_t num_steps, int64_t count);

  int64_t size() const { return static_cast<int64_t>(betas_.size()); }  ///< K: the number of steps.
  /// The training timestep of step k (what the model's time embedding sees).
  const std::vector<int64_t>& timestep_map() const { return timestep_map_; }
  /// β_k, ᾱ_k, ᾱ_{k−1} (1 at k = 0), √ᾱ_k, √(1 − ᾱ_k), √(1/ᾱ_k) and √(1/ᾱ_k − 1), per step k. @{
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  const std::vector<double>& alphas_cumprod_prev() const { return alphas_cumprod_prev_; }
  const std::vector<double>& sqrt_alphas_cumprod() const { return sqrt_alphas_cumprod_; }
  const std::vector<double>& sqrt_one_minus_alphas_cumprod() const {
    return sqrt_one_minus_alphas_cumprod_;
  }  ///< √(1 − ᾱ_k).
  const std::vector<double>& sqrt_recip_alphas_cumprod() const { return sqrt_recip_alphas_cumprod_; }
  const std::vector<double>& sqrt_recipm1_alphas_cumprod() const {
    return sqrt_recipm1_alphas_cumprod_;
  }  ///< √(1/ᾱ_k − 1). @}
  /// Posterior q(x_{k−1} | x_k, x_0): variance, its log with the k = 0 entry replaced by k = 1's
  /// (the variance is 0 there), and the two mean coefficients (of x_0 and of x_k). For K = 1 the
  /// clipped log is 0: it is never used, as the last step adds no noise. @{
  const std::vector<double>& posterior_variance() const { return posterior_variance_; }
  const std::vector<double>& posterior_log_variance_clipped() const {
    return posterior_log_variance_clipped_;
  }  ///< See posterior_variance().
  const std::vector<double>& posterior_mean_coef1() const { return posterior_mean_coef1_; }
  const std::vector<double>& posterior_mean_coef2() const { return posterior_mean_coef2_; }
  /// log β_k: the upper end of the learned variance range; the lower end is the clipped posterior
  /// log variance.
  const std::vector<double>& log_betas() const { return log_betas_; }
  /// IDDPM's "fixed large" log variance: log of [posterior_variance_1, β_1, β_2, ...].
  const std::vector<double>& fixed_large_log_variance() const { return fixed_large_log_variance_; }

 private:  /** @} */
  GaussianDiffusion(std::vector<double> betas, std::vector<int64_t> timestep_map);

  std::vector<int64_t> timestep_map_;
  std::vector<double> betas_, alphas_cumprod_, alphas_cumprod_prev_, sqrt_alphas_cumprod_,
      sqrt_one_minus_alphas_cumprod_, sqrt_recip_alphas_cumprod_, sqrt_recipm1_alphas_cumprod_,
      posterior_variance_, posterior_log_variance_clipped_, posterior_mean_coef1_,
      posterior_mean_coef2_, log_betas_, fixed_large_log_variance_;
};

}  // namespace tessera
