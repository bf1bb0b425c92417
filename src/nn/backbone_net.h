#pragma once
// The torch::nn modules behind Backbone (private to src/nn). Only backbone_net.cpp and
// backbone.cpp include this header: torch/nn headers are slow to compile, and the public headers
// expose tensors only. Module and parameter names: see Note [Backbone parameter names] in
// tessera/nn/backbone.h.

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"
#include "tessera/nn/backbone_config.h"
#include "tessera/nn/kv_cache.h"
#include "tessera/nn/position_encoding.h"

namespace tessera::nn_detail {

// What one forward call shares with every block.
struct CallContext {
  const BlockMask* mask = nullptr;  // query rows = the call's rows, keys = the attended keys
  AttentionOptions attention{};
  std::optional<RotaryTable> rotary{};  // cos, sin [P, 1, n, head_dim / 2], P = 1 or B
  KVCache* cache = nullptr;
  int64_t cache_start = 0;  // the cache slot of the call's first row
  std::optional<at::Generator> generator{};
  bool training = false;
  bool branch = false;  // run the branch blocks for the tail (BackboneConfig::branch_blocks)
};

// Draws for initialisation, from one seeded generator, in a fixed order.
struct Initializer {
  at::Generator generator;
  double std = 0.02;           // Linear and Embedding weights
  double position_std = 0.02;  // pos_start, pos_1LC
  int64_t depth = 1;
  void normal(at::Tensor& t, double stddev);
  void linear(torch::nn::Linear& linear, double scale = 1.0);
};

// LayerNorm (with or without affine) or RMSNorm (LlamaGen: computed in float32, then × weight).
class Norm : public torch::nn::Module {
 public:
  Norm(NormKind kind, int64_t width, bool affine, double eps);
  at::Tensor forward(const at::Tensor& x) const;
  void initialize();

 private:
  NormKind kind_;
  int64_t width_;
  double eps_;
  at::Tensor weight_, bias_;
};

// nn.Sequential(nn.SiLU(), nn.Linear(in, out)): the Linear is child "1", as in VAR's state dict.
class AdaLinear : public torch::nn::Module {
 public:
  AdaLinear(int64_t in_features, int64_t out_features);
  at::Tensor forward(const at::Tensor& condition);
  torch::nn::Linear linear{nullptr};
};

// Fused-qkv self-attention through tessera::attention.
class SelfAttention : public torch::nn::Module {
 public:
  explicit SelfAttention(const BackboneConfig& config);
  at::Tensor forward(const at::Tensor& x, CallContext& context, int64_t layer);
  void initialize(Initializer& init);

 private:
  BackboneConfig config_;
  torch::nn::Linear mat_qkv_{nullptr}, proj_{nullptr};
  at::Tensor q_bias_, v_bias_, zero_k_bias_, scale_mul_;
};

class FeedForward : public torch::nn::Module {
 public:
  explicit FeedForward(const BackboneConfig& config);
  at::Tensor forward(const at::Tensor& x, const CallContext& context);
  void initialize(Initializer& init);

 private:
  BackboneConfig config_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};              // GELU MLPs
  torch::nn::Linear w1_{nullptr}, w2_{nullptr}, w3_{nullptr};  // SwiGLU
};

// One pre-norm block, plain or AdaLN-modulated.
class Block : public torch::nn::Module {
 public:
  Block(const BackboneConfig& config, double drop_path_rate);
  // `condition` [B, width] (AdaLN per block) or `shared` [B, 1, 6, width] (shared AdaLN); both
  // undefined without AdaLN.
  at::Tensor forward(at::Tensor x, const at::Tensor& condition, const at::Tensor& shared,
                     CallContext& context, int64_t layer);
  void initialize(Initializer& init);

 private:
  at::Tensor drop_path(const at::Tensor& branch, const CallContext& context) const;

  BackboneConfig config_;
  double drop_path_rate_;
  std::shared_ptr<Norm> norm1_, norm2_;
  std::shared_ptr<SelfAttention> attn_;
  std::shared_ptr<FeedForward> ffn_;
  std::shared_ptr<AdaLinear> ada_lin_;
  at::Tensor ada_gss_;
};

// VAR's AdaLNBeforeHead without the head: LayerNorm without affine, ·(1 + s) + b.
class HeadNorm : public torch::nn::Module {
 public:
  HeadNorm(int64_t width, double eps);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& condition);
  std::shared_ptr<AdaLinear> ada_lin;

 private:
  int64_t width_;
  double eps_;
};

// Children registered as "0", "1", … (nn.ModuleList's names).
class IndexedModules : public torch::nn::Module {};

// The whole network. The embedding step takes inputs for every row of the call (see Note
// [Backbone rows and inputs]; Backbone::forward pads the rows it was not given).
class BackboneNet : public torch::nn::Module {
 public:
  BackboneNet(const BackboneConfig& config, uint64_t seed);

  // inputs: [B, n] ids or [B, n, input_channels]; condition [B, width] or undefined;
  // positions int64 [P, n] on the module's device.
  at::Tensor forward(const at::Tensor& inputs, const at::Tensor& condition,
                     const at::Tensor& positions, CallContext& context);
  // The class embedding of labels [B] (with the null class), [B, width].
  at::Tensor class_embedding(const at::Tensor& labels);

 private:
  at::Tensor embed(const at::Tensor& inputs, const at::Tensor& condition,
                   const at::Tensor& positions, const CallContext& context);
  void initialize(uint64_t seed);

  BackboneConfig config_;
  at::Tensor segment_of_position_;             // int64 [max_length] on the CPU
  torch::nn::Embedding token_embed_{nullptr};  // "word_embed" for token ids
  torch::nn::Linear vector_embed_{nullptr};    // "word_embed" for vectors
  torch::nn::Embedding class_emb_{nullptr}, lvl_embed_{nullptr};
  at::Tensor pos_start_, pos_1LC_;
  at::Tensor pos_out_;  // [1, last segment, width] (output_positions)
  std::shared_ptr<Norm> input_norm_;
  std::shared_ptr<AdaLinear> shared_ada_lin_;
  std::shared_ptr<IndexedModules> blocks_module_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<IndexedModules> branch_module_;  // "branch_blocks", when the config has them
  std::vector<std::shared_ptr<Block>> branch_blocks_;
  std::shared_ptr<Norm> final_norm_;
  std::shared_ptr<HeadNorm> head_nm_;
};

}  // namespace tessera::nn_detail
