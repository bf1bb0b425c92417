#include "tessera/head/diffusion_head.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <numbers>

#include "head/head_modules.h"
#include "head/head_util.h"

namespace tessera {
namespace {

using head_detail::shape_text;

std::shared_ptr<head_detail::AdaLnMlpNet> make_net(const DiffusionHeadConfig& config,
                                                   uint64_t seed) {
  config.validate();
  const int64_t channels = config.mlp.token_channels;
  return std::make_shared<head_detail::AdaLnMlpNet>(
      config.mlp, config.learn_variance ? 2 * channels : channels, seed);
}

at::Tensor float_table(const std::vector<double>& table) {
  return at::tensor(table, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
}

// table[t] for every row's timestep, as a column [N, 1] on `device`.
at::Tensor gather_column(const at::Tensor& table, const at::Tensor& t_cpu, at::Device device) {
  return table.index_select(0, t_cpu).unsqueeze(1).to(device);
}

// KL(N(m1, e^lv1) ‖ N(m2, e^lv2)) elementwise.
at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2) {
  return 0.5 * (-1.0 + logvar2 - logvar1 + at::exp(logvar1 - logvar2) +
                (mean1 - mean2).pow(2) * at::exp(-logvar2));
}

at::Tensor approx_standard_normal_cdf(const at::Tensor& x) {
  return 0.5 * (1.0 + at::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x.pow(3))));
}

// IDDPM's decoder likelihood: the Gaussian's mass in the bin of width 2/255 around x (data in
// [−1, 1], open-ended bins at the edges). MAR keeps it for latents; so does this head.
at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales) {
  at::Tensor centered = x - means;
  at::Tensor inv_stdv = at::exp(-log_scales);
  at::Tensor cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0));
  at::Tensor cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
  at::Tensor log_cdf_plus = at::log(cdf_plus.clamp_min(1e-12));
  at::Tensor log_one_minus_cdf_min = at::log((1.0 - cdf_min).clamp_min(1e-12));
  at::Tensor log_cdf_delta = at::log((cdf_plus - cdf_min).clamp_min(1e-12));
  return at::where(x < -0.999, log_cdf_plus,
                   at::where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta));
}

}  // namespace

DiffusionHead::DiffusionHead(const DiffusionHeadConfig& config, uint64_t seed)
    : DiffusionHead(config, make_net(config, seed)) {}

DiffusionHead::DiffusionHead(const DiffusionHeadConfig& config,
                             std::shared_ptr<head_detail::AdaLnMlpNet> net)
    : Head(net->root()),
      config_(config),
      net_(std::move(net)),
      training_process_(GaussianDiffusion::training(config.beta_schedule, config.training_steps)) {
  const GaussianDiffusion& p = training_process_;
  training_tables_ = {float_table(p.sqrt_alphas_cumprod()),
                      float_table(p.sqrt_one_minus_alphas_cumprod()),
                      float_table(p.sqrt_recip_alphas_cumprod()),
                      float_table(p.sqrt_recipm1_alphas_cumprod()),
                      float_table(p.posterior_mean_coef1()),
                      float_table(p.posterior_mean_coef2()),
                      float_table(p.posterior_log_variance_clipped()),
                      float_table(p.log_betas())};
}

DiffusionHead::~DiffusionHead() = default;

HeadConfig DiffusionHead::config() const {
  HeadConfig out;
  out.kind = HeadKind::diffusion;
  out.diffusion = config_;
  return out;
}

at::Tensor DiffusionHead::predict(const at::Tensor& x, const at::Tensor& t, const at::Tensor& z) {
  return net_->forward(x, t, z);
}

const GaussianDiffusion& DiffusionHead::sampling_process(int64_t count) {
  std::lock_guard<std::mutex> lock(processes_mutex_);
  auto it = sampling_processes_.find(count);
  if (it == sampling_processes_.end()) {
    it = sampling_processes_
             .emplace(count, GaussianDiffusion::respaced(config_.beta_schedule,
                                                         config_.training_steps, count))
             .first;
  }
  return it->second;
}

HeadLoss DiffusionHead::loss(const at::Tensor& hidden, const at::Tensor& targets,
                             const HeadLossOptions& options) {
  const int64_t channels = config_.mlp.token_channels;
  TESSERA_CHECK(targets.defined() && targets.dim() == 2 && targets.size(1) == channels &&
                    at::isFloatingType(targets.scalar_type()),
                "DiffusionHead::loss: targets must be floating point [N, {}], got {}", channels,
                shape_text(targets));
  TESSERA_CHECK(hidden.defined() && hidden.dim() == 2 && hidden.size(0) == targets.size(0),
                "DiffusionHead::loss: hidden must be [{}, {}] (one row per target), got {}",
                targets.size(0), config_.mlp.hidden_width, shape_text(hidden));
  const int64_t repeats = config_.batch_multiplier;
  const int64_t rows = targets.size(0) * repeats;
  const at::Device device = hidden.device();
  const TrainingTables& tables = training_tables_;

  // MAR repeats every (z, target) row diffusion_batch_mul times, each with its own t and ε.
  at::Tensor x_start = targets.to(at::kFloat).repeat({repeats, 1});
  at::Tensor z = hidden.repeat({repeats, 1});
  at::Tensor t_cpu = at::randint(0, training_process_.size(), {rows}, options.generator,
                                 at::TensorOptions().dtype(at::kLong));
  at::Tensor noise = at::randn({rows, channels}, options.generator,
                               at::TensorOptions().dtype(at::kFloat))
                         .to(device);
  at::Tensor x_t = gather_column(tables.sqrt_alphas_cumprod, t_cpu, device) * x_start +
                   gather_column(tables.sqrt_one_minus_alphas_cumprod, t_cpu, device) * noise;
  at::Tensor out = net_->forward(x_t, t_cpu.to(device, at::kFloat), z);
  at::Tensor eps = out.narrow(1, 0, channels);
  at::Tensor mse = (noise - eps).pow(2).mean(1);

  HeadLoss result;
  at::Tensor per_row = mse;
  at::Tensor vb;
  if (config_.learn_variance) {
    // IDDPM's hybrid loss: the variational bound trains the variance output only (the mean uses
    // a detached ε), in bits per dimension.
    at::Tensor var_values = out.narrow(1, channels, channels);
    at::Tensor pred_x_start =
        gather_column(tables.sqrt_recip_alphas_cumprod, t_cpu, device) * x_t -
        gather_column(tables.sqrt_recipm1_alphas_cumprod, t_cpu, device) * eps.detach();
    at::Tensor coef1 = gather_column(tables.posterior_mean_coef1, t_cpu, device);
    at::Tensor coef2 = gather_column(tables.posterior_mean_coef2, t_cpu, device);
    at::Tensor min_log = gather_column(tables.posterior_log_variance_clipped, t_cpu, device);
    at::Tensor max_log = gather_column(tables.log_betas, t_cpu, device);
    at::Tensor frac = (var_values + 1.0) / 2.0;
    at::Tensor model_log_variance = frac * max_log + (1.0 - frac) * min_log;
    at::Tensor model_mean = coef1 * pred_x_start + coef2 * x_t;
    at::Tensor true_mean = coef1 * x_start + coef2 * x_t;
    const double ln2 = std::log(2.0);
    at::Tensor kl = normal_kl(true_mean, min_log, model_mean, model_log_variance).mean(1) / ln2;
    at::Tensor decoder_nll =
        -discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_variance)
             .mean(1) /
        ln2;
    vb = at::where(t_cpu.to(device) == 0, decoder_nll, kl);
    per_row = mse + vb;
  }
  result.loss = head_detail::weighted_mean(per_row, options.weights, repeats, "DiffusionHead::loss");
  {
    at::NoGradGuard no_grad;
    result.terms.emplace_back(
        "mse", head_detail::weighted_mean(mse, options.weights, repeats, "DiffusionHead::loss")
                   .item<double>());
    if (vb.defined()) {
      result.terms.emplace_back(
          "vb", head_detail::weighted_mean(vb, options.weights, repeats, "DiffusionHead::loss")
                    .item<double>());
    }
  }
  return result;
}

HeadSample DiffusionHead::sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                                      const HeadSamplingOptions& options, SampleRngs& rngs,
                                      const HeadStep& step) {
  HeadSample result;
  result.values = run_sampler(at::Tensor(), hidden, guidance, options, rngs, step);
  return result;
}

at::Tensor DiffusionHead::denoise(const at::Tensor& x_T, const at::Tensor& hidden,
                                  const Guidance& guidance, const HeadSamplingOptions& options,
                                  SampleRngs& rngs, const HeadStep& step) {
  const CheckedHeadOptions checked(guidance, options);
  TESSERA_CHECK(x_T.defined(), "DiffusionHead::denoise: x_T is undefined");
  return run_sampler(x_T, hidden, checked.guidance(), checked.options(), rngs, step);
}

at::Tensor DiffusionHead::run_sampler(const at::Tensor& x_T, const at::Tensor& hidden,
                                      const Guidance& guidance, const HeadSamplingOptions& options,
                                      SampleRngs& rngs, const HeadStep& step) {
  // guidance and options were validated by Head::sample, the request's CheckedHeadOptions or
  // denoise.
  const double weight = guidance.weight_at(step.progress);
  const int64_t steps = options.step_annealing.enabled
                            ? options.step_annealing.steps_at(step.progress)
                            : options.diffusion.steps;
  TESSERA_CHECK(steps >= 1 && steps <= config_.training_steps,
                "DiffusionHead::sample: {} sampling steps requested; the process has {} training "
                "steps to respace (need 1 <= steps <= {})",
                steps, config_.training_steps, config_.training_steps);
  TESSERA_CHECK(hidden.defined() && hidden.dim() == 2,
                "DiffusionHead::sample: hidden must be [N, {}], got {}", config_.mlp.hidden_width,
                shape_text(hidden));
  at::NoGradGuard no_grad;

  at::Tensor z_cond = hidden;
  if (guidance.doubles_batch()) z_cond = split_guidance_batch(hidden, "DiffusionHead hidden").first;
  const bool guided = guidance.doubles_batch() && weight != 1.0;
  const int64_t rows = z_cond.size(0);
  const int64_t channels = config_.mlp.token_channels;
  const int64_t positions =
      head_detail::positions_per_sample(rows, rngs.size(), "DiffusionHead::sample");
  const at::Device device = hidden.device();
  const GaussianDiffusion& process = sampling_process(steps);
  const bool ddim = options.diffusion.sampler == DiffusionSampler::ddim;
  const double temperature = options.temperature;
  const double clip = options.diffusion.clip_x_start;

  // The per-step noise. Note [Reference seeding of the diffusion loop]: a shared stream draws it
  // as MAR does, for both halves of a guided batch (keeping the conditional half) and at the last
  // step too, where it is multiplied by 0.
  const bool reference_stream = rngs.shares_one_stream();
  const int64_t noise_rows = reference_stream ? hidden.size(0) : rows;
  const auto step_noise = [&] {
    return rngs.normal({positions * (noise_rows / rows), channels}, device)
        .reshape({noise_rows, channels})
        .narrow(0, 0, rows);
  };
  // MAR: the initial noise is not scaled by the temperature.
  at::Tensor x;
  if (x_T.defined()) {
    TESSERA_CHECK(x_T.dim() == 2 && x_T.size(0) == rows && x_T.size(1) == channels,
                  "DiffusionHead::denoise: x_T must be [{}, {}] (the conditional rows), got {}",
                  rows, channels, shape_text(x_T));
    x = x_T.to(device, at::kFloat);
  } else {
    x = rngs.normal({positions, channels}, device).reshape({rows, channels});
  }
  // Note [Sampling with a fixed condition]
  // The MLP's blocks read y = time_embed(t) + cond_embed(z). Over one loop z is fixed, so
  // cond_embed(z) is computed once per loop rather than at every step as MAR's p_sample_loop
  // does, and SiLU(y) once per step for all adaLN layers: the same GEMMs on the same rows, so the
  // same bits, with fewer weight reads (what a step of a small batch costs). The time term stays
  // per step on the call's rows: batching the S steps' embeddings into one GEMM changed its
  // rounding with the thread count (tests/hardening/determinism_test.cpp).
  const at::Tensor condition = net_->embed_condition(guided ? hidden : z_cond);
  for (int64_t i = process.size() - 1; i >= 0; --i) {
    const at::Tensor t = at::full({condition.size(0)},
                                  static_cast<double>(process.timestep_map()[i]),
                                  at::TensorOptions().dtype(at::kFloat).device(device));
    const at::Tensor y = net_->embed_timesteps(t) + condition;
    at::Tensor out = guided ? net_->forward_guided_embedded(x, y, weight, channels)
                            : net_->forward_embedded(x, y);
    at::Tensor eps = out.narrow(1, 0, channels);
    at::Tensor pred_x_start = x * process.sqrt_recip_alphas_cumprod()[i] -
                              eps * process.sqrt_recipm1_alphas_cumprod()[i];
    if (clip > 0) {
      // Note [Clipping x̂_0]; DDIM then uses the ε implied by the clipped x̂_0 (IDDPM's
      // _predict_eps_from_xstart).
      pred_x_start = pred_x_start.clamp(-clip, clip);
      eps = (x * process.sqrt_recip_alphas_cumprod()[i] - pred_x_start) /
            process.sqrt_recipm1_alphas_cumprod()[i];
    }
    if (!ddim) {
      at::Tensor mean = pred_x_start * process.posterior_mean_coef1()[i] +
                        x * process.posterior_mean_coef2()[i];
      if (i == 0) {
        if (reference_stream) step_noise();  // drawn and multiplied by 0 (MAR's nonzero_mask)
        x = mean;  // no noise on the last step
        break;
      }
      at::Tensor log_variance;
      if (config_.learn_variance) {
        at::Tensor frac = (out.narrow(1, channels, channels) + 1.0) / 2.0;
        log_variance = frac * process.log_betas()[i] +
                       (1.0 - frac) * process.posterior_log_variance_clipped()[i];
      } else {
        log_variance = at::full({1, 1}, process.fixed_large_log_variance()[i],
                                at::TensorOptions().dtype(at::kFloat).device(device));
      }
      x = mean + at::exp(0.5 * log_variance) * step_noise() * temperature;
    } else {
      // DDIM (Song et al. 2021, eq. 12). With ε-prediction the ε re-derived from x̂_0 is ε
      // itself, or the clipped x̂_0's above.
      const double alpha_bar = process.alphas_cumprod()[i];
      const double alpha_bar_prev = process.alphas_cumprod_prev()[i];
      const double sigma = options.diffusion.ddim_eta *
                           std::sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) *
                           std::sqrt(1.0 - alpha_bar / alpha_bar_prev);
      at::Tensor mean = pred_x_start * std::sqrt(alpha_bar_prev) +
                        eps * std::sqrt(std::max(0.0, 1.0 - alpha_bar_prev - sigma * sigma));
      if (i > 0 && options.diffusion.ddim_eta > 0) {
        x = mean + step_noise() * (sigma * temperature);
      } else {
        x = mean;
      }
    }
  }
  return x;
}

}  // namespace tessera
