#pragma once
// The torch::nn modules behind the tokenizers (private to src/tokenizer).
//
// Note [Reference module paths]
// Modules are registered under the names the reference implementations use (VAR's
// models/basic_vae.py, models/quant.py, models/vqvae.py; the same layout as Stable Diffusion's and
// taming-transformers' autoencoders), so that named_parameters() yields the reference's state-dict
// keys — "encoder.down.2.block.0.nin_shortcut.weight", "quantize.quant_resi.qresi_ls.3.bias" — and
// a reference checkpoint loads by name, with nothing renamed. Where the reference holds an
// nn.Identity (no shortcut conv, no attention, Phi with ratio 0) nothing is registered, exactly as
// the reference's state dict has no key there.
//
// Only the tokenizer .cpp files include this header: torch/nn headers are slow to compile, and the
// public headers expose tensors only.

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/tokenizer/tokenizer_config.h"

namespace tessera::tokenizer_detail {

// --- module plumbing (conv_autoencoder.cpp)
// -------------------------------------------------------

// Parameters and buffers under their module paths.
std::map<std::string, at::Tensor> module_state_dict(const torch::nn::Module& module);
// Copies `tensors` into the module's parameters and buffers. Every key must match one of the
// module's, with the same shape; otherwise throws tessera::Error listing the missing, unexpected
// and mismatched keys, before anything is copied. `what` names the model in messages.
void load_module_state_dict(torch::nn::Module& module,
                            const std::map<std::string, at::Tensor>& tensors,
                            const std::string& what);
std::vector<at::Tensor> module_parameters(const torch::nn::Module& module);
// The device of the module's first parameter or buffer (CPU when it has none).
at::Device module_device(const torch::nn::Module& module);
// Re-draws every convolution's parameters (every 4-d `*.weight` and its `*.bias`) as
// nn.Conv2d's default initialisation does — U(±1/√fan_in) for both, which is kaiming-uniform with
// a = √5 — but from a generator seeded with `seed`, so that a model's initial weights depend on
// its seed only, not on what else drew from LibTorch's global generator before.
void initialize_conv_parameters(torch::nn::Module& module, uint64_t seed);
// The seed stream (derive_seed(seed, kConvInitStream)) of a model's convolution initialisation;
// the codebook and training-time draws use the seed itself.
inline constexpr uint64_t kConvInitStream = 1;

torch::nn::Conv2d make_conv(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                            int64_t stride = 1, int64_t padding = -1);
// GroupNorm with the configuration's groups and eps; throws tessera::Error when `channels` is not
// divisible by the number of groups.
torch::nn::GroupNorm make_group_norm(int64_t channels, const ConvAutoencoderConfig& config);

// --- autoencoder blocks (conv_autoencoder.cpp)
// ----------------------------------------------------

// norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> dropout -> conv2, plus the input (through a 1x1
// nin_shortcut when the channel count changes).
class ResnetBlock : public torch::nn::Module {
 public:
  ResnetBlock(int64_t in_channels, int64_t out_channels, const ConvAutoencoderConfig& config);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, nin_shortcut_{nullptr};
  double dropout_ = 0;
};

// Single-head self-attention over the H*W positions, fused qkv 1x1 conv, softmax scale C^-1/2,
// residual.
class AttentionBlock : public torch::nn::Module {
 public:
  AttentionBlock(int64_t channels, const ConvAutoencoderConfig& config);
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t channels_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, proj_out_{nullptr};
};

// Pad right and bottom by one, then a 3x3 stride-2 convolution: H -> H/2 for even H.
class Downsample2x : public torch::nn::Module {
 public:
  explicit Downsample2x(int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_{nullptr};
};

// Nearest-neighbour doubling, then a 3x3 convolution.
class Upsample2x : public torch::nn::Module {
 public:
  explicit Upsample2x(int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_{nullptr};
};

// One resolution level: `block.i`, `attn.i` (lowest level only), and `downsample` or `upsample`.
class ResolutionLevel : public torch::nn::Module {
 public:
  std::vector<std::shared_ptr<ResnetBlock>> blocks;
  std::vector<std::shared_ptr<AttentionBlock>> attentions;  // empty, or one per block
  std::shared_ptr<Downsample2x> downsample;                 // encoder, all levels but the last
  std::shared_ptr<Upsample2x> upsample;                     // decoder, all levels but the first
  at::Tensor forward_blocks(at::Tensor h);
};

// block_1 -> attn_1 (optional) -> block_2 at the lowest resolution.
class MiddleBlocks : public torch::nn::Module {
 public:
  MiddleBlocks(int64_t channels, const ConvAutoencoderConfig& config);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::shared_ptr<ResnetBlock> block_1_, block_2_;
  std::shared_ptr<AttentionBlock> attn_1_;  // null when middle attention is off
};

// conv_in -> down.0 .. down.{L-1} -> mid -> norm_out -> SiLU -> conv_out (out_channels).
class ConvEncoder : public torch::nn::Module {
 public:
  ConvEncoder(const ConvAutoencoderConfig& config, int64_t out_channels);
  at::Tensor forward(const at::Tensor& images);

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::vector<std::shared_ptr<ResolutionLevel>> down_;
  std::shared_ptr<MiddleBlocks> mid_;
  torch::nn::GroupNorm norm_out_{nullptr};
};

// conv_in (in_channels) -> mid -> up.{L-1} .. up.0 -> norm_out -> SiLU -> conv_out (image
// channels). The decoder has res_blocks_per_level + 1 blocks per level.
class ConvDecoder : public torch::nn::Module {
 public:
  ConvDecoder(const ConvAutoencoderConfig& config, int64_t in_channels);
  at::Tensor forward(const at::Tensor& latent);

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::shared_ptr<MiddleBlocks> mid_;
  std::vector<std::shared_ptr<ResolutionLevel>> up_;  // up_[i] is level i (registered as up.i)
  torch::nn::GroupNorm norm_out_{nullptr};
};

// Checks images [B, C, H, W] for an encoder: floating point, C channels, H and W positive
// multiples of the downsampling factor. `what` names the caller.
void check_images(const at::Tensor& images, int64_t channels, int64_t downsampling_factor,
                  const char* what);

// --- quantisers -------------------------------------------------------------------------------

// Nearest codes by squared Euclidean distance, computed as VAR does (‖z‖² + ‖e‖² − 2 z·e, one
// addmm) so that near-ties resolve as in the reference; by cosine similarity when
// `l2_normalized`. z: [N, C], codebook [V, C]; returns int64 [N].
at::Tensor nearest_code_ids(const at::Tensor& z, const at::Tensor& codebook, bool l2_normalized);

// Per-code moving average of hits per step, and restarting codes that fall below a threshold
// (see DeadCodeRestartConfig). Owned by a quantiser; its state is a buffer of the quantiser.
struct DeadCodeTracker {
  DeadCodeRestartConfig config;
  int64_t steps_since_check = 0;
  // Updates the moving average `hits_ema` [V] with this step's histogram [V].
  void record(at::Tensor& hits_ema, const at::Tensor& histogram) const;
  // Replaces the rows of `codebook` [V, C] whose hits_ema is below min_hits by rows of
  // `candidates` [N, C] drawn with `generator`, and gives them a fresh hit count. Returns the
  // restarted codes' indices (int64, possibly empty).
  at::Tensor restart(at::Tensor& codebook, at::Tensor& hits_ema, const at::Tensor& candidates,
                     at::Generator& generator) const;
};

// A single-scale vector quantiser (vector_quantizer.cpp). Registers `embedding` and, for EMA
// codebooks, the buffers `ema_cluster_size` and `ema_embed_sum`; always `code_hits_ema`.
class VectorQuantizerModule : public torch::nn::Module {
 public:
  struct Output {
    at::Tensor quantized;  // [B, C, h, w], straight-through
    at::Tensor ids;        // int64 [B, h*w]
    at::Tensor loss;       // codebook + commitment, scalar
    double codebook_loss = 0;
    double commitment_loss = 0;
    int64_t restarted_codes = 0;
  };

  VectorQuantizerModule(const VectorQuantizerConfig& config, uint64_t seed);
  Output forward(const at::Tensor& z);
  // Codes of ids [B, h, w] as [B, C, h, w] (L2-normalised when the codebook is).
  at::Tensor lookup(const at::Tensor& ids);
  // Nearest-code ids of z [B, C, h, w]: int64 [B, h*w].
  at::Tensor quantize_ids(const at::Tensor& z);
  // The codes in use: the embedding, L2-normalised when configured.
  at::Tensor effective_codebook() const;

  const VectorQuantizerConfig& config() const { return config_; }
  torch::nn::Embedding embedding{nullptr};
  at::Tensor ema_cluster_size, ema_embed_sum, code_hits_ema;

 private:
  VectorQuantizerConfig config_;
  DeadCodeTracker dead_codes_;
  at::Generator generator_;
};

// One Phi of VAR's residual quantiser: a 3x3 conv blended with its input,
// Phi(h) = (1 − r)·h + r·conv(h). Its parameters are `weight` and `bias` directly (the
// reference's Phi is an nn.Conv2d subclass).
class PhiConv : public torch::nn::Module {
 public:
  PhiConv(int64_t channels, double residual_ratio);
  at::Tensor forward(const at::Tensor& h);
  at::Tensor weight, bias;

 private:
  double ratio_;
};

// VAR's VectorQuantizer2 (multiscale_quantizer.cpp): `embedding`, `ema_vocab_hit_SV` [S, V],
// `quant_resi` as PhiNonShared (quant_resi.k), PhiShared (quant_resi.qresi) or PhiPartiallyShared
// (quant_resi.qresi_ls.k), and `code_hits_ema` [V] when dead-code restart is on.
class MultiScaleQuantizerModule : public torch::nn::Module {
 public:
  struct Output {
    at::Tensor f_hat;  // [B, C, H, W], straight-through onto f
    at::Tensor loss;   // mean over scales of β‖sg[f̂] − f‖² + ‖f̂ − sg[f]‖²
    std::vector<at::Tensor> ids;  // per scale, int64 [B, pn²]
    int64_t restarted_codes = 0;
  };

  MultiScaleQuantizerModule(int64_t code_dim, const MultiScaleQuantizerConfig& config,
                            uint64_t seed);

  // The training pass (VAR's VectorQuantizer2.forward).
  Output forward(const at::Tensor& f);
  // f [B, C, pn_last, pn_last] -> ids per scale (to_fhat false) or f_hat after each scale (true).
  std::vector<at::Tensor> f_to_ids_or_f_hats(const at::Tensor& f, bool to_f_hat);
  // Codes of ids [B, pn²] at a scale of side pn as [B, C, pn, pn].
  at::Tensor embed(const at::Tensor& ids, int64_t side);
  // f_hat += Phi_si(upsample(h)) for h [B, C, pn_si, pn_si]; upsampled (bicubic) unless si is the
  // last scale.
  void add_scale(at::Tensor& f_hat, int64_t scale, const at::Tensor& h);
  // The Phi of scale si (nullptr: identity).
  std::shared_ptr<PhiConv> phi_for_scale(int64_t scale) const;

  const MultiScaleQuantizerConfig& config() const { return config_; }
  int64_t code_dim() const { return code_dim_; }
  int64_t num_scales() const { return static_cast<int64_t>(config_.patch_nums.size()); }
  int64_t final_side() const { return config_.patch_nums.back(); }

  torch::nn::Embedding embedding{nullptr};
  at::Tensor ema_vocab_hit_SV, code_hits_ema;

 private:
  int64_t code_dim_;
  MultiScaleQuantizerConfig config_;
  std::vector<std::shared_ptr<PhiConv>> phis_;  // null entries: identity
  DeadCodeTracker dead_codes_;
  at::Generator generator_;
  int64_t record_hit_ = 0;
};

}  // namespace tessera::tokenizer_detail
