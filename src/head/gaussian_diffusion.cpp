#include "tessera/head/gaussian_diffusion.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

#include "tessera/core/error.h"

namespace tessera {
namespace {

// IDDPM's cosine ᾱ(t), evaluated in the reference's order of operations.
double cosine_alpha_bar(double t) {
  const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2.0);
  return c * c;
}

}  // namespace

std::vector<double> diffusion_betas(BetaSchedule schedule, int64_t num_steps) {
  TESSERA_CHECK(num_steps >= 2, "diffusion betas: num_steps must be >= 2, got {}", num_steps);
  std::vector<double> betas(static_cast<size_t>(num_steps));
  const auto n = static_cast<double>(num_steps);
  switch (schedule) {
    case BetaSchedule::linear: {
      // numpy.linspace(start, stop, T): start + i·(stop − start)/(T − 1), the last entry exactly
      // stop.
      const double scale = 1000.0 / n;
      const double start = scale * 0.0001;
      const double stop = scale * 0.02;
      const double step = (stop - start) / (n - 1.0);
      for (int64_t i = 0; i < num_steps; ++i) betas[i] = static_cast<double>(i) * step + start;
      betas.back() = stop;
      break;
    }
    case BetaSchedule::cosine:
      for (int64_t i = 0; i < num_steps; ++i) {
        const double t1 = static_cast<double>(i) / n;
        const double t2 = static_cast<double>(i + 1) / n;
        betas[i] = std::min(1.0 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1), 0.999);
      }
      break;
  }
  return betas;
}

std::vector<int64_t> respaced_timesteps(int64_t num_steps, int64_t count) {
  TESSERA_CHECK(count >= 1 && count <= num_steps,
                "respaced timesteps: cannot take {} steps from a process of {} (need 1 <= count "
                "<= {})",
                count, num_steps, num_steps);
  const double stride =
      count <= 1 ? 1.0 : static_cast<double>(num_steps - 1) / static_cast<double>(count - 1);
  std::vector<int64_t> steps;
  steps.reserve(static_cast<size_t>(count));
  double position = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    // Python's round(): half to even, which nearbyint does in the default rounding mode.
    steps.push_back(static_cast<int64_t>(std::nearbyint(position)));
    position += stride;
  }
  return steps;
}

GaussianDiffusion GaussianDiffusion::training(BetaSchedule schedule, int64_t num_steps) {
  std::vector<double> betas = diffusion_betas(schedule, num_steps);
  std::vector<int64_t> map(betas.size());
  for (size_t i = 0; i < map.size(); ++i) map[i] = static_cast<int64_t>(i);
  return GaussianDiffusion(std::move(betas), std::move(map));
}

GaussianDiffusion GaussianDiffusion::respaced(BetaSchedule schedule, int64_t num_steps,
                                              int64_t count) {
  const GaussianDiffusion base = training(schedule, num_steps);
  const std::vector<int64_t> kept = respaced_timesteps(num_steps, count);
  std::vector<double> betas;
  betas.reserve(kept.size());
  double last_alpha_cumprod = 1.0;
  for (int64_t t : kept) {
    const double alpha_cumprod = base.alphas_cumprod_[static_cast<size_t>(t)];
    betas.push_back(1.0 - alpha_cumprod / last_alpha_cumprod);
    last_alpha_cumprod = alpha_cumprod;
  }
  return GaussianDiffusion(std::move(betas), kept);
}

GaussianDiffusion::GaussianDiffusion(std::vector<double> betas, std::vector<int64_t> timestep_map)
    : timestep_map_(std::move(timestep_map)), betas_(std::move(betas)) {
  const size_t k = betas_.size();
  TESSERA_CHECK(k >= 1 && timestep_map_.size() == k,
                "Gaussian diffusion: {} betas and {} timesteps (need the same count, >= 1)", k,
                timestep_map_.size());
  for (double beta : betas_) {
    TESSERA_CHECK(beta > 0 && beta <= 1, "Gaussian diffusion: every beta must be in (0, 1], got {}",
                  beta);
  }
  auto resize = [k](std::vector<double>& v) { v.assign(k, 0.0); };
  for (auto* v : {&alphas_cumprod_, &alphas_cumprod_prev_, &sqrt_alphas_cumprod_,
                  &sqrt_one_minus_alphas_cumprod_, &sqrt_recip_alphas_cumprod_,
                  &sqrt_recipm1_alphas_cumprod_, &posterior_variance_,
                  &posterior_log_variance_clipped_, &posterior_mean_coef1_, &posterior_mean_coef2_,
                  &log_betas_, &fixed_large_log_variance_}) {
    resize(*v);
  }
  double cumprod = 1.0;
  for (size_t i = 0; i < k; ++i) {
    const double alpha = 1.0 - betas_[i];
    alphas_cumprod_prev_[i] = cumprod;
    cumprod *= alpha;
    alphas_cumprod_[i] = cumprod;
  }
  for (size_t i = 0; i < k; ++i) {
    const double beta = betas_[i];
    const double ac = alphas_cumprod_[i];
    const double ac_prev = alphas_cumprod_prev_[i];
    sqrt_alphas_cumprod_[i] = std::sqrt(ac);
    sqrt_one_minus_alphas_cumprod_[i] = std::sqrt(1.0 - ac);
    sqrt_recip_alphas_cumprod_[i] = std::sqrt(1.0 / ac);
    sqrt_recipm1_alphas_cumprod_[i] = std::sqrt(1.0 / ac - 1.0);
    posterior_variance_[i] = beta * (1.0 - ac_prev) / (1.0 - ac);
    posterior_mean_coef1_[i] = beta * std::sqrt(ac_prev) / (1.0 - ac);
    posterior_mean_coef2_[i] = (1.0 - ac_prev) * std::sqrt(1.0 - beta) / (1.0 - ac);
    log_betas_[i] = std::log(beta);
  }
  // The posterior variance is 0 at step 0; both the clipped log and "fixed large" use step 1's
  // value there. With one step there is no step 1, and step 0 adds no noise anyway.
  if (k > 1) {
    for (size_t i = 0; i < k; ++i) {
      posterior_log_variance_clipped_[i] = std::log(posterior_variance_[i == 0 ? 1 : i]);
      fixed_large_log_variance_[i] = std::log(i == 0 ? posterior_variance_[1] : betas_[i]);
    }
  } else {
    fixed_large_log_variance_[0] = log_betas_[0];
  }
}

}  // namespace tessera
