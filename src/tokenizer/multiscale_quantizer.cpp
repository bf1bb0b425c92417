// VAR's multi-scale residual quantiser (models/quant.py, VectorQuantizer2), re-implemented from
// its description and behaviour. See Note [Choosing Phi] and Note [Multi-scale residual
// quantisation] in multiscale_vq_vae.h.

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <limits>

#include "tokenizer/nn_modules.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/tokenizer/codebook_usage.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"

namespace tessera {

std::vector<double> var_phi_ticks(int64_t num_phis) {
  TESSERA_CHECK(num_phis >= 1, "var_phi_ticks: need at least one Phi, got {}", num_phis);
  const double k = static_cast<double>(num_phis);
  // np.linspace(start, stop, K): start + i·((stop − start)/(K − 1)), the last tick exactly stop.
  // K = 4 uses thirds, any other K halves (the reference's special case, kept as is).
  const double start = num_phis == 4 ? 1.0 / 3.0 / k : 1.0 / 2.0 / k;
  const double stop = num_phis == 4 ? 1.0 - 1.0 / 3.0 / k : 1.0 - 1.0 / 2.0 / k;
  std::vector<double> ticks(static_cast<size_t>(num_phis));
  if (num_phis == 1) {
    ticks[0] = start;  // np.linspace(a, b, 1) == [a]
    return ticks;
  }
  const double step = (stop - start) / (k - 1.0);
  for (int64_t i = 0; i + 1 < num_phis; ++i) {
    ticks[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  }
  ticks.back() = stop;
  return ticks;
}

int64_t var_phi_index(int64_t scale, int64_t num_scales, int64_t phi_count) {
  TESSERA_CHECK(num_scales >= 2,
                "var_phi_index: VAR picks Phi by si/(S-1), which needs S >= 2 scales, got {}",
                num_scales);
  TESSERA_CHECK(scale >= 0 && scale < num_scales, "var_phi_index: scale {} is outside [0, {})",
                scale, num_scales);
  TESSERA_CHECK(phi_count >= 0, "var_phi_index: phi_count must be >= 0, got {}", phi_count);
  if (phi_count == 1) return 0;  // PhiShared: one Phi whatever the scale
  const int64_t k = phi_count == 0 ? num_scales : phi_count;
  const std::vector<double> ticks = var_phi_ticks(k);
  const double at = static_cast<double>(scale) / static_cast<double>(num_scales - 1);
  // np.argmin(np.abs(ticks - at)): the first index of the smallest distance, in float64.
  int64_t best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < k; ++i) {
    const double distance = std::abs(ticks[static_cast<size_t>(i)] - at);
    if (distance < best_distance) {
      best_distance = distance;
      best = i;
    }
  }
  return best;
}

}  // namespace tessera

namespace tessera::tokenizer_detail {

PhiConv::PhiConv(int64_t channels, double residual_ratio) : ratio_(std::abs(residual_ratio)) {
  // Drawn by the owning model's initialize_conv_parameters (nn.Conv2d's initialisation, seeded).
  weight = register_parameter("weight", at::zeros({channels, channels, 3, 3}));
  bias = register_parameter("bias", at::zeros({channels}));
}

at::Tensor PhiConv::forward(const at::Tensor& h) {
  return h.mul(1.0 - ratio_) + at::conv2d(h, weight, bias, 1, 1).mul_(ratio_);
}

MultiScaleQuantizerModule::MultiScaleQuantizerModule(int64_t code_dim,
                                                     const MultiScaleQuantizerConfig& config,
                                                     uint64_t seed)
    : code_dim_(code_dim), config_(config), generator_(make_cpu_generator(seed)) {
  config_.validate();
  TESSERA_CHECK(code_dim > 0, "multi-scale quantiser: code_dim must be positive, got {}", code_dim);
  dead_codes_.config = config_.dead_code_restart;
  const int64_t vocab = config_.codebook_size;
  const int64_t scales = num_scales();
  const bool identity_phi = std::abs(config_.phi_residual_ratio) <= 1e-6;
  auto make_phi = [&]() -> std::shared_ptr<PhiConv> {
    return identity_phi ? nullptr
                        : std::make_shared<PhiConv>(code_dim_, config_.phi_residual_ratio);
  };

  // quant_resi: PhiNonShared (a ModuleList itself), PhiShared (.qresi) or PhiPartiallyShared
  // (.qresi_ls); an identity Phi keeps its list slot but has no parameters.
  auto container = register_module("quant_resi", std::make_shared<torch::nn::Module>());
  auto push = [](torch::nn::ModuleList& list, const std::shared_ptr<PhiConv>& phi) {
    if (phi) {
      list->push_back(phi);
    } else {
      list->push_back(std::make_shared<torch::nn::Module>());
    }
  };
  if (config_.phi_count == 1) {
    phis_.push_back(make_phi());
    if (phis_[0]) container->register_module("qresi", phis_[0]);
  } else {
    const int64_t count = config_.phi_count == 0 ? scales : config_.phi_count;
    torch::nn::ModuleList list;
    for (int64_t i = 0; i < count; ++i) {
      phis_.push_back(make_phi());
      push(list, phis_.back());
    }
    if (config_.phi_count == 0) {
      // PhiNonShared is an nn.ModuleList: its Phis sit directly under quant_resi.
      for (int64_t i = 0; i < count; ++i) {
        container->register_module(std::to_string(i), list->ptr(static_cast<size_t>(i)));
      }
    } else {
      container->register_module("qresi_ls", list.ptr());
    }
  }

  ema_vocab_hit_SV = register_buffer("ema_vocab_hit_SV", at::zeros({scales, vocab}));
  embedding = register_module("embedding",
                              torch::nn::Embedding(torch::nn::EmbeddingOptions(vocab, code_dim_)));
  {
    // Uniform in ±1/V: VectorQuantizer2.eini(-1), and taming-transformers' initialisation.
    at::NoGradGuard no_grad;
    const double bound = 1.0 / static_cast<double>(vocab);
    embedding->weight.uniform_(-bound, bound, generator_);
  }
  if (dead_codes_.config.interval > 0) {
    code_hits_ema = register_buffer("code_hits_ema", at::zeros({vocab}));
  }
  train(false);
}

std::shared_ptr<PhiConv> MultiScaleQuantizerModule::phi_for_scale(int64_t scale) const {
  const int64_t index = var_phi_index(scale, num_scales(), config_.phi_count);
  return phis_.at(static_cast<size_t>(index));
}

at::Tensor MultiScaleQuantizerModule::embed(const at::Tensor& ids, int64_t side) {
  TESSERA_CHECK(ids.dim() == 2 && ids.size(1) == side * side,
                "multi-scale quantiser: expected ids [B, {}] for a {}x{} scale, got shape {}",
                side * side, side, side, ids.sizes());
  check_ids_in_codebook(ids, config_.codebook_size, "multi-scale quantiser");
  // [B, L, C] -> [B, C, L] -> [B, C, pn, pn], as the reference's transpose(1, 2).view(...)
  return embedding->forward(ids.to(at::kLong))
      .transpose(1, 2)
      .view({ids.size(0), code_dim_, side, side});
}

void MultiScaleQuantizerModule::add_scale(at::Tensor& f_hat, int64_t scale, const at::Tensor& h) {
  const int64_t side = final_side();
  at::Tensor upsampled = h;
  if (scale != num_scales() - 1) {
    upsampled = at::upsample_bicubic2d(h, {side, side}, /*align_corners=*/false);
  }
  const auto phi = phi_for_scale(scale);
  f_hat.add_(phi ? phi->forward(upsampled) : upsampled);
}

namespace {

// The rows of f [B, C, H, W] at a pn x pn scale, as [B·pn·pn, C]: area-downsampled unless the scale
// is the last one (which is used as is).
at::Tensor rest_vectors(const at::Tensor& f_rest, int64_t side, bool last_scale) {
  const at::Tensor resized = last_scale ? f_rest : at::adaptive_avg_pool2d(f_rest, {side, side});
  return resized.permute({0, 2, 3, 1}).reshape({-1, f_rest.size(1)});
}

}  // namespace

std::vector<at::Tensor> MultiScaleQuantizerModule::f_to_ids_or_f_hats(const at::Tensor& f,
                                                                      bool to_f_hat) {
  TESSERA_CHECK(f.dim() == 4 && f.size(1) == code_dim_,
                "multi-scale quantiser: expected latents [B, {}, h, w], got shape {}", code_dim_,
                f.sizes());
  TESSERA_CHECK(f.size(2) == final_side() && f.size(3) == final_side(),
                "multi-scale quantiser: patch_nums must end at the latent size: the last scale is "
                "{}x{} but the latent is {}x{}",
                final_side(), final_side(), f.size(2), f.size(3));
  at::NoGradGuard no_grad;
  const int64_t batch = f.size(0);
  at::Tensor f_rest = f.detach().clone();
  at::Tensor f_hat = at::zeros_like(f_rest);
  const at::Tensor codebook = embedding->weight.detach();
  std::vector<at::Tensor> results;
  const int64_t scales = num_scales();
  for (int64_t si = 0; si < scales; ++si) {
    const int64_t side = config_.patch_nums[static_cast<size_t>(si)];
    const bool last = si == scales - 1;
    const at::Tensor ids =
        nearest_code_ids(rest_vectors(f_rest, side, last), codebook, config_.l2_normalized_codes);
    at::Tensor h = embedding->forward(ids.view({batch, side, side})).permute({0, 3, 1, 2});
    if (!last) {
      h = at::upsample_bicubic2d(h, {f.size(2), f.size(3)}, false).contiguous();
    } else {
      h = h.contiguous();
    }
    const auto phi = phi_for_scale(si);
    if (phi) h = phi->forward(h);
    f_hat.add_(h);
    f_rest.sub_(h);
    results.push_back(to_f_hat ? f_hat.clone() : ids.view({batch, side * side}));
  }
  return results;
}

MultiScaleQuantizerModule::Output MultiScaleQuantizerModule::forward(const at::Tensor& f) {
  TESSERA_CHECK(f.dim() == 4 && f.size(1) == code_dim_,
                "multi-scale quantiser: expected latents [B, {}, h, w], got shape {}", code_dim_,
                f.sizes());
  TESSERA_CHECK(f.size(2) == final_side() && f.size(3) == final_side(),
                "multi-scale quantiser: patch_nums must end at the latent size: the last scale is "
                "{}x{} but the latent is {}x{}",
                final_side(), final_side(), f.size(2), f.size(3));
  const int64_t batch = f.size(0), vocab = config_.codebook_size;
  const int64_t scales = num_scales();
  const at::Tensor f_no_grad = f.detach();
  at::Tensor f_rest = f_no_grad.clone();
  at::Tensor f_hat = at::zeros_like(f_rest);
  at::Tensor loss = at::zeros({}, f.options());
  at::Tensor total_hits = at::zeros({vocab}, f.options().dtype(at::kFloat));
  std::vector<at::Tensor> candidates;
  Output out;
  for (int64_t si = 0; si < scales; ++si) {
    const int64_t side = config_.patch_nums[static_cast<size_t>(si)];
    const bool last = si == scales - 1;
    at::Tensor ids;
    {
      at::NoGradGuard no_grad;
      const at::Tensor rest = rest_vectors(f_rest, side, last);
      ids = nearest_code_ids(rest, embedding->weight.detach(), config_.l2_normalized_codes);
      if (is_training()) {
        const at::Tensor hits = at::bincount(ids, {}, vocab).to(at::kFloat);
        total_hits += hits;
        // The reference's usage record: copied the first time, then 0.9/0.1 for 100 steps, then
        // 0.99/0.01 (it records only under torch.distributed; Tessera always does).
        auto row = ema_vocab_hit_SV[si];
        if (record_hit_ == 0) {
          row.copy_(hits);
        } else if (record_hit_ < 100) {
          row.mul_(0.9).add_(hits * 0.1);
        } else {
          row.mul_(0.99).add_(hits * 0.01);
        }
        if (dead_codes_.config.interval > 0) candidates.push_back(rest);
      }
    }
    at::Tensor h = embedding->forward(ids.view({batch, side, side})).permute({0, 3, 1, 2});
    h = last ? h.contiguous()
             : at::upsample_bicubic2d(h, {f.size(2), f.size(3)}, false).contiguous();
    const auto phi = phi_for_scale(si);
    if (phi) h = phi->forward(h);
    f_hat = f_hat + h;
    f_rest = f_rest - h.detach();
    loss = loss + at::mse_loss(f_hat.detach(), f) * config_.commitment_weight +
           at::mse_loss(f_hat, f_no_grad);
    out.ids.push_back(ids.view({batch, side * side}));
  }
  if (is_training()) ++record_hit_;
  if (is_training() && dead_codes_.config.interval > 0) {
    at::NoGradGuard no_grad;
    dead_codes_.record(code_hits_ema, total_hits);
    if (++dead_codes_.steps_since_check >= dead_codes_.config.interval) {
      dead_codes_.steps_since_check = 0;
      at::Tensor weight = embedding->weight;
      out.restarted_codes =
          dead_codes_.restart(weight, code_hits_ema, at::cat(candidates), generator_).numel();
    }
  }
  out.loss = loss / static_cast<double>(scales);
  // Straight-through: the value of f_hat, the gradient of f.
  out.f_hat = (f_hat.detach() - f_no_grad) + f;
  return out;
}

}  // namespace tessera::tokenizer_detail
