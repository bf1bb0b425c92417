#include "tessera/tokenizer/vector_quantizer.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "tokenizer/nn_modules.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/tokenizer/codebook_usage.h"

namespace tessera::tokenizer_detail {

namespace {

// F.normalize(x, dim): x / max(‖x‖, 1e-12).
at::Tensor l2_normalize(const at::Tensor& x, int64_t dim) {
  return x / x.norm(2, {dim}, /*keepdim=*/true).clamp_min(1e-12);
}

}  // namespace

at::Tensor nearest_code_ids(const at::Tensor& z, const at::Tensor& codebook, bool l2_normalized) {
  if (l2_normalized) {
    return at::argmax(at::mm(l2_normalize(z, 1), l2_normalize(codebook.t(), 0)), 1);
  }
  // ‖z‖² + ‖e‖² − 2·z·eᵀ, in VAR's order of operations (a sum, then one addmm).
  at::Tensor distances = z.square().sum(1, /*keepdim=*/true) + codebook.square().sum(1);
  distances.addmm_(z, codebook.t(), /*beta=*/1, /*alpha=*/-2);
  return at::argmin(distances, 1);
}

void DeadCodeTracker::record(at::Tensor& hits_ema, const at::Tensor& histogram) const {
  const at::Tensor hits = histogram.to(hits_ema.scalar_type()).to(hits_ema.device());
  hits_ema.mul_(config.hit_decay).add_(hits, 1.0 - config.hit_decay);
}

at::Tensor DeadCodeTracker::restart(at::Tensor& codebook, at::Tensor& hits_ema,
                                    const at::Tensor& candidates, at::Generator& generator) const {
  const at::Tensor dead = (hits_ema < config.min_hits).nonzero().flatten();
  const int64_t dead_count = dead.numel();
  if (dead_count == 0 || candidates.size(0) == 0) return dead.slice(0, 0, 0);
  // Distinct candidate rows while there are enough of them; with replacement otherwise.
  at::Tensor rows;
  if (candidates.size(0) >= dead_count) {
    rows = at::randperm(candidates.size(0), generator, at::TensorOptions().dtype(at::kLong))
               .slice(0, 0, dead_count);
  } else {
    rows = at::randint(candidates.size(0), {dead_count}, generator,
                       at::TensorOptions().dtype(at::kLong));
  }
  rows = rows.to(candidates.device());
  const at::Tensor dead_on_device = dead.to(codebook.device());
  codebook.index_copy_(0, dead_on_device, candidates.index_select(0, rows).to(codebook.dtype()));
  // A fresh code gets the uniform share of hits, so it has time to be picked before it is judged.
  const double uniform_share =
      static_cast<double>(candidates.size(0)) / static_cast<double>(hits_ema.size(0));
  hits_ema.index_fill_(0, dead.to(hits_ema.device()), std::max(uniform_share, config.min_hits));
  return dead;
}

VectorQuantizerModule::VectorQuantizerModule(const VectorQuantizerConfig& config, uint64_t seed)
    : config_(config), generator_(make_cpu_generator(seed)) {
  config_.validate();
  dead_codes_.config = config_.dead_code_restart;
  const int64_t vocab = config_.codebook_size;
  embedding = register_module(
      "embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(vocab, config_.code_dim)));
  {
    at::NoGradGuard no_grad;
    const double bound = 1.0 / static_cast<double>(vocab);
    embedding->weight.uniform_(-bound, bound, generator_);
  }
  if (config_.codebook_update == CodebookUpdate::ema) {
    // The codebook is not learned by gradient: its values come from the moving averages.
    embedding->weight.set_requires_grad(false);
    ema_cluster_size = register_buffer("ema_cluster_size", at::ones({vocab}));
    ema_embed_sum = register_buffer("ema_embed_sum", embedding->weight.detach().clone());
  }
  code_hits_ema = register_buffer("code_hits_ema", at::zeros({vocab}));
  // The module starts in evaluation mode; the tokenizer's set_training(true) switches it.
  train(false);
}

at::Tensor VectorQuantizerModule::effective_codebook() const {
  return config_.l2_normalized_codes ? l2_normalize(embedding->weight, 1) : embedding->weight;
}

at::Tensor VectorQuantizerModule::quantize_ids(const at::Tensor& z) {
  TESSERA_CHECK(z.dim() == 4 && z.size(1) == config_.code_dim,
                "vector quantiser: expected latents [B, {}, h, w], got shape {}", config_.code_dim,
                z.sizes());
  at::NoGradGuard no_grad;
  const at::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, config_.code_dim});
  const at::Tensor ids =
      nearest_code_ids(flat, embedding->weight.detach(), config_.l2_normalized_codes);
  return ids.view({z.size(0), z.size(2) * z.size(3)});
}

at::Tensor VectorQuantizerModule::lookup(const at::Tensor& ids) {
  TESSERA_CHECK(ids.dim() == 3, "vector quantiser: expected ids [B, h, w], got shape {}",
                ids.sizes());
  check_ids_in_codebook(ids, config_.codebook_size, "vector quantiser");
  const at::Tensor codes = at::embedding(effective_codebook(), ids.to(at::kLong));  // [B,h,w,C]
  return codes.permute({0, 3, 1, 2}).contiguous();
}

VectorQuantizerModule::Output VectorQuantizerModule::forward(const at::Tensor& z) {
  TESSERA_CHECK(z.dim() == 4 && z.size(1) == config_.code_dim,
                "vector quantiser: expected latents [B, {}, h, w], got shape {}", config_.code_dim,
                z.sizes());
  const int64_t batch = z.size(0), height = z.size(2), width = z.size(3);
  const int64_t vocab = config_.codebook_size;
  at::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, config_.code_dim});
  if (config_.l2_normalized_codes) flat = l2_normalize(flat, 1);
  const at::Tensor flat_detached = flat.detach();

  at::Tensor ids;
  {
    at::NoGradGuard no_grad;
    ids = nearest_code_ids(flat_detached, embedding->weight.detach(), config_.l2_normalized_codes);
  }

  Output out;
  if (is_training()) {
    at::NoGradGuard no_grad;
    const at::Tensor histogram = at::bincount(ids, {}, vocab).to(at::kFloat);
    if (config_.codebook_update == CodebookUpdate::ema) {
      const double decay = config_.ema_decay;
      ema_cluster_size.mul_(decay).add_(histogram.to(ema_cluster_size.device()), 1.0 - decay);
      const at::Tensor batch_sums =
          at::zeros_like(ema_embed_sum).index_add_(0, ids, flat_detached.to(ema_embed_sum.dtype()));
      ema_embed_sum.mul_(decay).add_(batch_sums, 1.0 - decay);
      const at::Tensor total = ema_cluster_size.sum();
      const at::Tensor smoothed = (ema_cluster_size + config_.ema_epsilon) /
                                  (total + static_cast<double>(vocab) * config_.ema_epsilon) *
                                  total;
      embedding->weight.copy_(ema_embed_sum / smoothed.unsqueeze(1));
    }
    dead_codes_.record(code_hits_ema, histogram);
    if (dead_codes_.config.interval > 0 &&
        ++dead_codes_.steps_since_check >= dead_codes_.config.interval) {
      dead_codes_.steps_since_check = 0;
      at::Tensor weight = embedding->weight;
      const at::Tensor restarted =
          dead_codes_.restart(weight, code_hits_ema, flat_detached, generator_);
      out.restarted_codes = restarted.numel();
      if (out.restarted_codes > 0 && config_.codebook_update == CodebookUpdate::ema) {
        // Keep the moving averages consistent with the new codes: count 1, sum = the code.
        ema_cluster_size.index_fill_(0, restarted, 1.0);
        ema_embed_sum.index_copy_(0, restarted, weight.index_select(0, restarted));
      }
    }
  }

  // Codes after any EMA update or restart, so that the loss sees the codebook that is used next.
  const at::Tensor codes = effective_codebook().index_select(0, ids);
  const at::Tensor commitment = at::mse_loss(flat, codes.detach());
  at::Tensor loss = commitment * config_.commitment_weight;
  if (config_.codebook_update == CodebookUpdate::gradient) {
    const at::Tensor codebook_term = at::mse_loss(codes, flat_detached);
    loss = loss + codebook_term * config_.codebook_weight;
    out.codebook_loss = codebook_term.item<double>();
  }
  out.commitment_loss = commitment.item<double>();
  const at::Tensor straight_through = flat + (codes - flat).detach();
  out.quantized =
      straight_through.view({batch, height, width, config_.code_dim}).permute({0, 3, 1, 2});
  out.ids = ids.view({batch, height * width});
  out.loss = loss;
  return out;
}

}  // namespace tessera::tokenizer_detail

namespace tessera {

VectorQuantizer::VectorQuantizer(const VectorQuantizerConfig& config, uint64_t seed)
    : module_(std::make_shared<tokenizer_detail::VectorQuantizerModule>(config, seed)) {}
VectorQuantizer::~VectorQuantizer() = default;
VectorQuantizer::VectorQuantizer(VectorQuantizer&&) noexcept = default;
VectorQuantizer& VectorQuantizer::operator=(VectorQuantizer&&) noexcept = default;

VectorQuantizerOutput VectorQuantizer::forward(const at::Tensor& z) {
  auto out = module_->forward(z);
  return {out.quantized,      out.ids, out.loss, out.codebook_loss, out.commitment_loss,
          out.restarted_codes};
}

at::Tensor VectorQuantizer::lookup(const at::Tensor& ids) const { return module_->lookup(ids); }

at::Tensor VectorQuantizer::codebook() const { return module_->effective_codebook().detach(); }

void VectorQuantizer::set_codebook(const at::Tensor& codes) {
  const auto& config = module_->config();
  TESSERA_CHECK(
      codes.dim() == 2 && codes.size(0) == config.codebook_size && codes.size(1) == config.code_dim,
      "set_codebook: expected [{}, {}], got shape {}", config.codebook_size, config.code_dim,
      codes.sizes());
  at::NoGradGuard no_grad;
  module_->embedding->weight.copy_(codes);
  if (module_->ema_embed_sum.defined()) {
    module_->ema_cluster_size.fill_(1.0);
    module_->ema_embed_sum.copy_(codes);
  }
}

at::Tensor VectorQuantizer::code_hits_ema() const { return module_->code_hits_ema; }

void VectorQuantizer::set_training(bool training) { module_->train(training); }

std::vector<at::Tensor> VectorQuantizer::parameters() const {
  std::vector<at::Tensor> trainable;
  for (const auto& p : module_->parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  return trainable;
}

std::map<std::string, at::Tensor> VectorQuantizer::state_dict() const {
  return tokenizer_detail::module_state_dict(*module_);
}

const VectorQuantizerConfig& VectorQuantizer::config() const { return module_->config(); }

}  // namespace tessera
