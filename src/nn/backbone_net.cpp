// The backbone's modules: norms, attention, MLPs, blocks, embeddings, and their initialisation.

#include "nn/backbone_net.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/nn/linear.h"

namespace tessera::nn_detail {

namespace {

// Note [AdaLN initialisation]
// VAR's init_weights (with its training defaults aln = 0.5, alng = 1e-5) scales the AdaLN
// projection's rows: the four scale/shift vectors by 0.5 and the two gates γ by 1e-5, so every
// block starts close to the identity (the DiT "adaLN-zero" idea without exact zeros, which would
// leave the gates' gradients to the other rows alone). The output projections of each residual
// branch are divided by sqrt(2·depth) (GPT-2's rule, also VAR's).
constexpr double kAdaLnScale = 0.5;
constexpr double kAdaLnGateScale = 1e-5;

// Inverted dropout whose mask comes from the call's generator (drawn on the CPU, as drop_path's),
// not from at::dropout's global generator: a training step is then a function of its seed, so a
// resumed run repeats an uninterrupted one and a schedule's training draws replay exactly.
at::Tensor maybe_dropout(const at::Tensor& x, double p, const CallContext& context) {
  if (!context.training || p <= 0) return x;
  const double keep = 1.0 - p;
  at::Tensor mask = at::empty(x.sizes(), at::kFloat).bernoulli_(keep, context.generator);
  return x * mask.div_(keep).to(x.device(), x.scalar_type());
}

}  // namespace

// --- initialisation
// -------------------------------------------------------------------------------

void Initializer::normal(at::Tensor& t, double stddev) {
  // PyTorch's trunc_normal_(std=s) truncates at ±2 in absolute terms, which for the small std used
  // here never binds; a clamp keeps the same support.
  at::Tensor draw = at::empty(t.sizes(), at::kFloat).normal_(0.0, stddev, generator).clamp_(-2, 2);
  t.copy_(draw);
}

void Initializer::linear(torch::nn::Linear& layer, double scale) {
  normal(layer->weight, std);
  if (scale != 1.0) layer->weight.mul_(scale);
  if (layer->bias.defined()) layer->bias.zero_();
}

// --- Norm
// -------------------------------------------------------------------------------------------

Norm::Norm(NormKind kind, int64_t width, bool affine, double eps)
    : kind_(kind), width_(width), eps_(eps) {
  if (affine) {
    weight_ = register_parameter("weight", at::ones({width}));
    if (kind == NormKind::layer_norm) bias_ = register_parameter("bias", at::zeros({width}));
  }
}

void Norm::initialize() {
  if (weight_.defined()) weight_.fill_(1.0);
  if (bias_.defined()) bias_.zero_();
}

at::Tensor Norm::forward(const at::Tensor& x) const {
  if (kind_ == NormKind::layer_norm) return at::layer_norm(x, {width_}, weight_, bias_, eps_);
  // LlamaGen's RMSNorm: normalise in float32, back to x's dtype, then scale.
  const at::Tensor xf = x.to(at::kFloat);
  at::Tensor out = (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps_)).to(x.scalar_type());
  return weight_.defined() ? out * weight_ : out;
}

// --- AdaLinear
// --------------------------------------------------------------------------------------

AdaLinear::AdaLinear(int64_t in_features, int64_t out_features) {
  linear = register_module("1", torch::nn::Linear(in_features, out_features));
}

at::Tensor AdaLinear::forward(const at::Tensor& condition) {
  return ::tessera::linear(at::silu(condition), *linear);
}

// --- SelfAttention
// ----------------------------------------------------------------------------------

SelfAttention::SelfAttention(const BackboneConfig& config) : config_(config) {
  const int64_t c = config.width;
  mat_qkv_ = register_module(
      "mat_qkv",
      torch::nn::Linear(torch::nn::LinearOptions(c, 3 * c).bias(config.qkv_bias == QkvBias::all)));
  if (config.qkv_bias == QkvBias::q_and_v) {
    q_bias_ = register_parameter("q_bias", at::zeros({c}));
    v_bias_ = register_parameter("v_bias", at::zeros({c}));
    // A buffer, as in VAR, so that its checkpoints (which hold it) load by name.
    zero_k_bias_ = register_buffer("zero_k_bias", at::zeros({c}));
  }
  if (config.qk_l2_norm) {
    scale_mul_ = register_parameter("scale_mul_1H11", at::zeros({1, config.num_heads, 1, 1}));
  }
  proj_ = register_module("proj",
                          torch::nn::Linear(torch::nn::LinearOptions(c, c).bias(config.proj_bias)));
}

void SelfAttention::initialize(Initializer& init) {
  init.linear(mat_qkv_);
  init.linear(proj_, 1.0 / std::sqrt(2.0 * static_cast<double>(init.depth)));
  if (q_bias_.defined()) {
    q_bias_.zero_();
    v_bias_.zero_();
    zero_k_bias_.zero_();
  }
  if (scale_mul_.defined()) scale_mul_.fill_(std::log(config_.qk_scale_init));
}

at::Tensor SelfAttention::forward(const at::Tensor& x, CallContext& context, int64_t layer) {
  const int64_t batch = x.size(0), n = x.size(1), c = config_.width;
  const int64_t heads = config_.num_heads, head_dim = config_.head_dim();
  at::Tensor bias;
  if (config_.qkv_bias == QkvBias::q_and_v) {
    bias = at::cat({q_bias_, zero_k_bias_, v_bias_});
  } else if (config_.qkv_bias == QkvBias::all) {
    bias = mat_qkv_->bias;
  }
  const at::Tensor qkv = ::tessera::linear(x, *mat_qkv_, bias);
  // Under autocast this is the lower precision; q, k and v are brought back to it after the
  // float32 steps below so that attention sees one dtype.
  const at::ScalarType compute_dtype = qkv.scalar_type();
  const at::Tensor split = qkv.view({batch, n, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
  at::Tensor q = split[0], k = split[1], v = split[2];  // [B, H, n, D]
  if (config_.qk_l2_norm) {
    // VAR: F.normalize (x / max(‖x‖, 1e-12)), q scaled by exp(min(λ_h, log max)).
    const at::Tensor scale = scale_mul_.clamp_max(std::log(config_.qk_scale_max)).exp();
    q = q / q.norm(2, -1, true).clamp_min(1e-12) * scale;
    k = k / k.norm(2, -1, true).clamp_min(1e-12);
  }
  if (context.rotary) {
    q = apply_rotary(q, *context.rotary);
    k = apply_rotary(k, *context.rotary);
  }
  q = q.to(compute_dtype);
  k = k.to(compute_dtype);
  v = v.to(compute_dtype);
  if (context.cache != nullptr) {
    auto [keys, values] = context.cache->write(layer, context.cache_start, k, v);
    k = keys.to(compute_dtype);
    v = values.to(compute_dtype);
  }
  at::Tensor out = attention(q, k, v, *context.mask, context.attention);
  out = out.transpose(1, 2).reshape({batch, n, c});
  return maybe_dropout(::tessera::linear(out, *proj_), config_.dropout,
                       context);
}

// --- FeedForward
// ------------------------------------------------------------------------------------

FeedForward::FeedForward(const BackboneConfig& config) : config_(config) {
  const int64_t c = config.width, h = config.resolved_mlp_hidden();
  const bool b = config.mlp_bias;
  if (config.mlp == MlpKind::swiglu) {
    w1_ = register_module("w1", torch::nn::Linear(torch::nn::LinearOptions(c, h).bias(b)));
    w3_ = register_module("w3", torch::nn::Linear(torch::nn::LinearOptions(c, h).bias(b)));
    w2_ = register_module("w2", torch::nn::Linear(torch::nn::LinearOptions(h, c).bias(b)));
  } else {
    fc1_ = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(c, h).bias(b)));
    fc2_ = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(h, c).bias(b)));
  }
}

void FeedForward::initialize(Initializer& init) {
  const double out_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(init.depth));
  if (config_.mlp == MlpKind::swiglu) {
    init.linear(w1_);
    init.linear(w3_);
    init.linear(w2_, out_scale);
  } else {
    init.linear(fc1_);
    init.linear(fc2_, out_scale);
  }
}

at::Tensor FeedForward::forward(const at::Tensor& x, const CallContext& context) {
  at::Tensor out;
  switch (config_.mlp) {
    case MlpKind::gelu_tanh:
      out = ::tessera::linear(at::gelu(::tessera::linear(x, *fc1_), "tanh"), *fc2_);
      break;
    case MlpKind::gelu:
      out = ::tessera::linear(at::gelu(::tessera::linear(x, *fc1_)), *fc2_);
      break;
    case MlpKind::swiglu:
      out = ::tessera::linear(
          at::silu(::tessera::linear(x, *w1_)) * ::tessera::linear(x, *w3_), *w2_);
      break;
  }
  return maybe_dropout(out, config_.dropout, context);
}

// --- Block
// ------------------------------------------------------------------------------------------

Block::Block(const BackboneConfig& config, double drop_path_rate)
    : config_(config), drop_path_rate_(drop_path_rate) {
  norm1_ = register_module("norm1", std::make_shared<Norm>(config.norm, config.width,
                                                           config.norm_affine, config.norm_eps));
  norm2_ = register_module("norm2", std::make_shared<Norm>(config.norm, config.width,
                                                           config.norm_affine, config.norm_eps));
  attn_ = register_module("attn", std::make_shared<SelfAttention>(config));
  ffn_ = register_module("ffn", std::make_shared<FeedForward>(config));
  if (config.adaln == AdaLnKind::per_block) {
    ada_lin_ =
        register_module("ada_lin", std::make_shared<AdaLinear>(config.width, 6 * config.width));
  } else if (config.adaln == AdaLnKind::shared) {
    ada_gss_ = register_parameter("ada_gss", at::zeros({1, 1, 6, config.width}));
  }
}

void Block::initialize(Initializer& init) {
  norm1_->initialize();
  norm2_->initialize();
  attn_->initialize(init);
  ffn_->initialize(init);
  const int64_t c = config_.width;
  if (ada_lin_) {
    // See Note [AdaLN initialisation]. Rows [0, 2C) are the gates γ1, γ2.
    init.linear(ada_lin_->linear);
    ada_lin_->linear->weight.slice(0, 0, 2 * c).mul_(kAdaLnGateScale);
    ada_lin_->linear->weight.slice(0, 2 * c).mul_(kAdaLnScale);
  }
  if (ada_gss_.defined()) {
    // VAR: randn / sqrt(C), then the same row scaling.
    init.normal(ada_gss_, 1.0 / std::sqrt(static_cast<double>(c)));
    ada_gss_.slice(2, 0, 2).mul_(kAdaLnGateScale);
    ada_gss_.slice(2, 2).mul_(kAdaLnScale);
  }
}

at::Tensor Block::drop_path(const at::Tensor& branch, const CallContext& context) const {
  if (!context.training || drop_path_rate_ <= 0) return branch;
  const double keep = 1.0 - drop_path_rate_;
  // Drawn on the CPU so that a CPU generator also serves CUDA tensors.
  at::Tensor mask =
      at::empty({branch.size(0), 1, 1}, at::kFloat).bernoulli_(keep, context.generator);
  return branch * mask.div_(keep).to(branch.device(), branch.scalar_type());
}

at::Tensor Block::forward(at::Tensor x, const at::Tensor& condition, const at::Tensor& shared,
                          CallContext& context, int64_t layer) {
  if (config_.adaln == AdaLnKind::none) {
    x = x + drop_path(attn_->forward(norm1_->forward(x), context, layer), context);
    return x + drop_path(ffn_->forward(norm2_->forward(x), context), context);
  }
  // VAR's order: γ1, γ2, scale1, scale2, shift1, shift2, each [B, 1, C].
  const at::Tensor modulation = config_.adaln == AdaLnKind::per_block
                                    ? ada_lin_->forward(condition).view({-1, 1, 6, config_.width})
                                    : ada_gss_ + shared;
  const auto m = modulation.unbind(2);
  const at::Tensor h1 = norm1_->forward(x) * (m[2] + 1) + m[4];
  x = x + drop_path(attn_->forward(h1, context, layer) * m[0], context);
  const at::Tensor h2 = norm2_->forward(x) * (m[3] + 1) + m[5];
  return x + drop_path(ffn_->forward(h2, context) * m[1], context);
}

// --- HeadNorm
// ---------------------------------------------------------------------------------------

HeadNorm::HeadNorm(int64_t width, double eps) : width_(width), eps_(eps) {
  ada_lin = register_module("ada_lin", std::make_shared<AdaLinear>(width, 2 * width));
}

at::Tensor HeadNorm::forward(const at::Tensor& x, const at::Tensor& condition) {
  const auto ss = ada_lin->forward(condition).view({-1, 1, 2, width_}).unbind(2);  // scale, shift
  return at::layer_norm(x, {width_}, {}, {}, eps_) * (ss[0] + 1) + ss[1];
}

// --- BackboneNet
// ------------------------------------------------------------------------------------

BackboneNet::BackboneNet(const BackboneConfig& config, uint64_t seed) : config_(config) {
  const int64_t c = config.width;
  if (config.input == InputKind::token_ids) {
    token_embed_ = register_module("word_embed", torch::nn::Embedding(config.vocab_size, c));
  } else {
    vector_embed_ = register_module(
        "word_embed",
        torch::nn::Linear(
            torch::nn::LinearOptions(config.input_channels, c).bias(config.input_bias)));
  }
  if (config.input_norm) {
    input_norm_ = register_module("input_norm",
                                  std::make_shared<Norm>(config.norm, c, true, config.norm_eps));
  }
  if (config.num_classes > 0) {
    class_emb_ = register_module("class_emb", torch::nn::Embedding(config.num_classes + 1, c));
  }
  if (config.condition_token_embedding) {
    pos_start_ = register_parameter("pos_start", at::zeros({1, config.condition_tokens, c}));
  }
  if (config.absolute_positions == AbsolutePositions::learned) {
    pos_1LC_ = register_parameter("pos_1LC", at::zeros({1, config.max_length(), c}));
  }
  if (config.level_embedding) {
    lvl_embed_ = register_module(
        "lvl_embed", torch::nn::Embedding(static_cast<int64_t>(config.segments.size()), c));
  }
  if (config.adaln == AdaLnKind::shared) {
    shared_ada_lin_ = register_module("shared_ada_lin", std::make_shared<AdaLinear>(c, 6 * c));
  }
  // Stochastic depth grows linearly from 0 at the first block (VAR, LlamaGen); a branch block
  // stands at the depth of the block it replaces.
  const auto drop_rate = [&](int64_t i) {
    return config.depth > 1
               ? config.drop_path * static_cast<double>(i) / static_cast<double>(config.depth - 1)
               : config.drop_path;
  };
  blocks_module_ = register_module("blocks", std::make_shared<IndexedModules>());
  for (int64_t i = 0; i < config.depth; ++i) {
    blocks_.push_back(blocks_module_->register_module(
        std::to_string(i), std::make_shared<Block>(config, drop_rate(i))));
  }
  if (config.branch_blocks > 0) {
    branch_module_ = register_module("branch_blocks", std::make_shared<IndexedModules>());
    for (int64_t j = 0; j < config.branch_blocks; ++j) {
      const int64_t layer = config.depth - config.branch_blocks + j;
      branch_blocks_.push_back(branch_module_->register_module(
          std::to_string(j), std::make_shared<Block>(config, drop_rate(layer))));
    }
  }
  if (config.final_norm == FinalNorm::norm) {
    final_norm_ =
        register_module("norm", std::make_shared<Norm>(config.norm, c, true, config.norm_eps));
  } else if (config.final_norm == FinalNorm::adaln) {
    head_nm_ = register_module("head_nm", std::make_shared<HeadNorm>(c, config.norm_eps));
  }
  if (config.output_positions) {
    pos_out_ = register_parameter("pos_out", at::zeros({1, config.segments.back(), c}));
  }

  std::vector<int64_t> segment_of;
  for (size_t s = 0; s < config.segments.size(); ++s) {
    segment_of.insert(segment_of.end(), static_cast<size_t>(config.segments[s]),
                      static_cast<int64_t>(s));
  }
  segment_of_position_ = at::tensor(segment_of, at::kLong);
  initialize(seed);
}

void BackboneNet::initialize(uint64_t seed) {
  at::NoGradGuard no_grad;
  const double automatic_std = std::sqrt(1.0 / (3.0 * static_cast<double>(config_.width)));
  Initializer init{make_cpu_generator(seed),
                   config_.init_std < 0 ? automatic_std : config_.init_std, automatic_std,
                   config_.depth};
  if (token_embed_) init.normal(token_embed_->weight, init.std);
  if (vector_embed_) init.linear(vector_embed_);
  if (class_emb_) init.normal(class_emb_->weight, init.std);
  if (pos_start_.defined()) init.normal(pos_start_, init.position_std);
  if (pos_1LC_.defined()) init.normal(pos_1LC_, init.position_std);
  if (pos_out_.defined()) init.normal(pos_out_, init.position_std);
  if (input_norm_) input_norm_->initialize();
  if (lvl_embed_) init.normal(lvl_embed_->weight, init.std);
  if (shared_ada_lin_) init.linear(shared_ada_lin_->linear);
  for (auto& block : blocks_) block->initialize(init);
  for (auto& block : branch_blocks_) block->initialize(init);
  if (final_norm_) final_norm_->initialize();
  if (head_nm_) init.linear(head_nm_->ada_lin->linear, kAdaLnScale);
}

at::Tensor BackboneNet::class_embedding(const at::Tensor& labels) {
  return class_emb_->forward(labels);
}

at::Tensor BackboneNet::embed(const at::Tensor& inputs, const at::Tensor& condition,
                              const at::Tensor& positions, const CallContext& context) {
  const int64_t batch = inputs.size(0), n = inputs.size(1), c = config_.width;
  at::Tensor x = token_embed_ ? token_embed_->forward(inputs)
                              : ::tessera::linear(inputs, *vector_embed_);
  if (config_.condition_tokens > 0) {
    // Rows at condition positions hold the class embedding (+ pos_start) instead of an input.
    at::Tensor cond = condition.unsqueeze(1).expand({batch, n, c});
    if (pos_start_.defined()) {
      const at::Tensor slot = positions.clamp_max(config_.condition_tokens - 1).flatten();
      cond = cond + pos_start_[0].index_select(0, slot).view({positions.size(0), n, c});
    }
    const at::Tensor is_condition = (positions < config_.condition_tokens).unsqueeze(-1);
    const at::ScalarType dtype = at::promote_types(x.scalar_type(), cond.scalar_type());
    x = at::where(is_condition, cond.to(dtype), x.to(dtype));
  }
  at::Tensor position_terms;  // VAR adds (lvl_embed + pos_1LC) as one term
  const auto add_term = [&](const at::Tensor& t) {
    position_terms = position_terms.defined() ? position_terms + t : t;
  };
  if (lvl_embed_) {
    const at::Tensor segment =
        segment_of_position_.to(positions.device()).index_select(0, positions.flatten());
    add_term(lvl_embed_->forward(segment).view({positions.size(0), n, c}));
  }
  if (pos_1LC_.defined()) {
    add_term(pos_1LC_[0].index_select(0, positions.flatten()).view({positions.size(0), n, c}));
  }
  if (config_.absolute_positions == AbsolutePositions::sinusoidal) {
    add_term(sinusoidal_embedding(positions, c).to(x.device()));
  }
  if (position_terms.defined()) x = x + position_terms;
  if (input_norm_) x = input_norm_->forward(x);
  return maybe_dropout(x, config_.embedding_dropout, context);
}

at::Tensor BackboneNet::forward(const at::Tensor& inputs, const at::Tensor& condition,
                                const at::Tensor& positions, CallContext& context) {
  at::Tensor x = embed(inputs, condition, positions, context);
  at::Tensor shared;
  if (shared_ada_lin_) shared = shared_ada_lin_->forward(condition).view({-1, 1, 6, config_.width});
  const size_t tail_begin = blocks_.size() - branch_blocks_.size();
  for (size_t i = 0; i < blocks_.size(); ++i) {
    Block& block = context.branch && i >= tail_begin ? *branch_blocks_[i - tail_begin] : *blocks_[i];
    x = block.forward(x, condition, shared, context, static_cast<int64_t>(i));
  }
  if (final_norm_) x = final_norm_->forward(x);
  if (head_nm_) x = head_nm_->forward(x, condition);
  if (pos_out_.defined()) {
    // Rows before the last segment get a zero row of the padded table.
    const int64_t first = config_.max_length() - config_.segments.back();
    const at::Tensor table =
        at::cat({at::zeros({first, config_.width}, pos_out_.options()), pos_out_[0]});
    x = x + table.index_select(0, positions.flatten())
                .view({positions.size(0), x.size(1), config_.width})
                .to(x.scalar_type());
  }
  return x;
}

}  // namespace tessera::nn_detail
