// Backbone: argument checks, masks fitted to the attended keys, positions, condition dropout,
// KV-cache bookkeeping, sizes and persistence around BackboneNet.

#include "tessera/nn/backbone.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "nn/backbone_net.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/phase_profile.h"
#include "tessera/io/safetensors.h"

namespace tessera {

namespace {

constexpr const char* kConfigMetadataKey = "tessera.backbone_config";

// The mask with keys [key_offset, key_offset + key_count) of `mask` renumbered from 0. Every row
// must see only keys inside that range: those are the keys the call has (its own rows, or the
// cache's slots).
BlockMask fit_mask_keys(const BlockMask& mask, int64_t key_offset, int64_t key_count) {
  if (key_offset == 0 && mask.key_length() == key_count) return mask;
  TESSERA_CHECK(key_offset >= 0 && key_offset + key_count <= mask.key_length(),
                "backbone: the mask has {} keys but the call attends to keys [{}, {}) of the "
                "sequence; expected a mask with {} keys, or one in sequence coordinates covering "
                "them",
                mask.key_length(), key_offset, key_offset + key_count, key_count);
  if (!mask.is_interval()) {
    const at::Tensor dense = mask.dense_mask();
    const at::Tensor inside = dense.slice(1, key_offset, key_offset + key_count);
    TESSERA_CHECK(dense.sum().item<int64_t>() == inside.sum().item<int64_t>(),
                  "backbone: the dense mask lets some row see a key outside [{}, {}), the keys "
                  "this call has",
                  key_offset, key_offset + key_count);
    return BlockMask::from_dense(inside.contiguous());
  }
  const auto rows = static_cast<size_t>(mask.query_length());
  std::vector<int64_t> begin(rows), end(rows);
  for (size_t q = 0; q < rows; ++q) {
    const int64_t b = mask.key_begin()[q], e = mask.key_end()[q];
    if (b >= e) {
      begin[q] = end[q] = 0;
      continue;
    }
    TESSERA_CHECK(b >= key_offset && e <= key_offset + key_count,
                  "backbone: mask row {} sees keys [{}, {}) but this call has only keys [{}, {}) "
                  "(its own rows, or the KV cache's filled slots)",
                  q, b, e, key_offset, key_offset + key_count);
    begin[q] = b - key_offset;
    end[q] = e - key_offset;
  }
  return BlockMask::from_intervals(std::move(begin), std::move(end), key_count,
                                   mask.query_layout());
}

// Inputs for every row of the call: see Note [Backbone rows and inputs].
at::Tensor inputs_for_all_rows(const BackboneConfig& config, const at::Tensor& inputs,
                               int64_t batch, int64_t rows, int64_t leading_condition_rows,
                               at::Device device) {
  const bool ids = config.input == InputKind::token_ids;
  const int64_t feature_dims = ids ? 2 : 3;
  const auto options = at::TensorOptions().device(device).dtype(ids ? at::kLong : at::kFloat);
  auto padding = [&](int64_t count) {
    return ids ? at::zeros({batch, count}, options)
               : at::zeros({batch, count, config.input_channels}, options);
  };
  if (!inputs.defined()) {
    TESSERA_CHECK(leading_condition_rows == rows,
                  "backbone: no inputs were given, but {} of the call's {} rows are not condition "
                  "rows",
                  rows - leading_condition_rows, rows);
    return padding(rows);
  }
  TESSERA_CHECK(inputs.dim() == feature_dims && inputs.size(0) == batch,
                "backbone: expected inputs {} with batch {}, got shape {}",
                ids ? "[B, m] (token ids)" : "[B, m, input_channels]", batch, inputs.sizes());
  if (ids) {
    TESSERA_CHECK(!at::isFloatingType(inputs.scalar_type()),
                  "backbone: token-id inputs must be integers, got {}", inputs.scalar_type());
    if (inputs.numel() > 0) {
      const int64_t lo = inputs.min().item<int64_t>(), hi = inputs.max().item<int64_t>();
      TESSERA_CHECK(lo >= 0 && hi < config.vocab_size,
                    "backbone: token ids must be in [0, {}), got values in [{}, {}]",
                    config.vocab_size, lo, hi);
    }
  } else {
    TESSERA_CHECK(
        at::isFloatingType(inputs.scalar_type()) && inputs.size(2) == config.input_channels,
        "backbone: vector inputs must be floating point with {} channels, got {} {}",
        config.input_channels, inputs.scalar_type(), inputs.sizes());
  }
  TESSERA_CHECK(inputs.device() == device, "backbone: inputs on {} but the backbone is on {}",
                inputs.device(), device);
  const int64_t given = inputs.size(1);
  const at::Tensor converted = inputs.to(ids ? at::kLong : at::kFloat);
  if (given == rows) return converted;
  TESSERA_CHECK(given == rows - leading_condition_rows,
                "backbone: the call has {} rows ({} of them condition rows), so inputs must have "
                "{} rows (all) or {} (after the condition rows); got {}",
                rows, leading_condition_rows, rows, rows - leading_condition_rows, given);
  return at::cat({padding(leading_condition_rows).to(converted.scalar_type()), converted}, 1);
}

}  // namespace

const std::vector<std::string>& var_derived_buffer_keys() {
  static const std::vector<std::string> keys = {"lvl_1L", "attn_bias_for_masking"};
  return keys;
}

Backbone::Backbone(const BackboneConfig& config, uint64_t seed) : config_(config) {
  try {
    config_.validate();
  } catch (const Error& e) {
    TESSERA_FAIL("backbone config: {}", e.what());
  }
  layout_ = TokenLayout(config_.segments);
  net_ = std::make_shared<nn_detail::BackboneNet>(config_, seed);
}

Backbone::~Backbone() = default;
Backbone::Backbone(Backbone&&) noexcept = default;
Backbone& Backbone::operator=(Backbone&&) noexcept = default;

BackboneOutput Backbone::forward(const at::Tensor& inputs, const at::Tensor& labels,
                                 const BlockMask& mask, const BackboneForwardOptions& options) {
  const PhaseScope phase(Phase::backbone);
  const BackboneConfig& c = config_;
  const at::Device dev = device();
  const int64_t n = mask.query_length();
  TESSERA_CHECK(labels.defined() || inputs.defined(),
                "backbone: neither inputs nor labels were given; cannot tell the batch size");
  const int64_t batch = labels.defined() ? labels.size(0) : inputs.size(0);
  KVCache* cache = options.cache;
  const int64_t begin = options.begin.value_or(cache != nullptr ? cache->length() : 0);

  // --- the cache ---
  if (cache != nullptr) {
    TESSERA_CHECK(begin == cache->length(),
                  "backbone: with a KV cache the call must start at the cache's length {}, got "
                  "begin {}; truncate the cache to re-run earlier positions",
                  cache->length(), begin);
    TESSERA_CHECK(cache->num_layers() == c.depth && cache->num_heads() == c.num_heads &&
                      cache->head_dim() == c.head_dim() && cache->batch() == batch,
                  "backbone: the KV cache is for {} layers, batch {}, {} heads of dim {}; the "
                  "backbone has {} layers, {} heads of dim {} and the call batch {}",
                  cache->num_layers(), cache->batch(), cache->num_heads(), cache->head_dim(),
                  c.depth, c.num_heads, c.head_dim(), batch);
    TESSERA_CHECK(cache->device() == dev, "backbone: the KV cache is on {} but the backbone on {}",
                  cache->device(), dev);
    TESSERA_CHECK(n <= cache->free_slots(),
                  "backbone: the call has {} rows but the KV cache has {} free slots (capacity "
                  "{}, length {})",
                  n, cache->free_slots(), cache->capacity(), cache->length());
  }

  // --- positions ---
  at::Tensor positions;
  int64_t leading_condition_rows = 0;
  if (options.positions.defined()) {
    const at::Tensor& p = options.positions;
    TESSERA_CHECK(!at::isFloatingType(p.scalar_type()) &&
                      ((p.dim() == 1 && p.size(0) == n) ||
                       (p.dim() == 2 && p.size(0) == batch && p.size(1) == n)),
                  "backbone: positions must be integers of shape [{}] or [{}, {}], got {} {}", n,
                  batch, n, p.scalar_type(), p.sizes());
    positions = (p.dim() == 1 ? p.unsqueeze(0) : p).to(dev, at::kLong);
    const int64_t lo = positions.min().item<int64_t>(), hi = positions.max().item<int64_t>();
    TESSERA_CHECK(lo >= 0 && hi < max_length(),
                  "backbone: positions must be in [0, {}) (the sequence length), got [{}, {}]",
                  max_length(), lo, hi);
    TESSERA_CHECK(!inputs.defined() || inputs.size(1) == n,
                  "backbone: with explicit positions the inputs must cover all {} rows, got {}", n,
                  inputs.size(1));
    TESSERA_CHECK(inputs.defined() || hi < c.condition_tokens,
                  "backbone: no inputs were given, but position {} is not a condition position "
                  "(there are {})",
                  hi, c.condition_tokens);
    leading_condition_rows = inputs.defined() ? 0 : n;
  } else {
    TESSERA_CHECK(begin >= 0 && begin + n <= max_length(),
                  "backbone: the call covers positions [{}, {}) but the sequence has {}", begin,
                  begin + n, max_length());
    positions =
        at::arange(begin, begin + n, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0);
    leading_condition_rows = std::clamp<int64_t>(c.condition_tokens - begin, 0, n);
  }
  const at::Tensor all_inputs =
      inputs_for_all_rows(c, inputs, batch, n, leading_condition_rows, dev);

  // --- the condition ---
  const bool training = is_training();
  at::Tensor condition;
  if (c.num_classes > 0) {
    TESSERA_CHECK(
        labels.defined() && labels.dim() == 1 && !at::isFloatingType(labels.scalar_type()),
        "backbone: a class-conditional backbone needs int64 labels [B]");
    at::Tensor l = labels.to(dev, at::kLong);
    if (l.numel() > 0) {
      const int64_t lo = l.min().item<int64_t>(), hi = l.max().item<int64_t>();
      TESSERA_CHECK(lo >= 0 && hi <= c.num_classes,
                    "backbone: labels must be in [0, {}] ({} is the null class), got [{}, {}]",
                    c.num_classes, c.num_classes, lo, hi);
    }
    if (training && c.condition_dropout > 0) {
      // Classifier-free guidance training: each label becomes the null class with probability p
      // (VAR: torch.rand(B) < cond_drop_rate). Drawn on the CPU, see Note [Batch-invariant
      // sampling] in core/rng.h for why draws live there.
      const at::Tensor u = at::empty({batch}, at::kFloat).uniform_(0.0, 1.0, options.generator);
      l = at::where((u < c.condition_dropout).to(dev), at::full_like(l, c.num_classes), l);
    }
    condition = net_->class_embedding(l);
  } else {
    TESSERA_CHECK(!labels.defined(),
                  "backbone: labels were given but the backbone is unconditional (num_classes 0)");
  }

  // --- the mask and the attention ---
  std::optional<BlockMask> fitted;
  if (cache != nullptr) {
    fitted = fit_mask_keys(mask, 0, begin + n);
  } else if (mask.key_length() == n) {
    fitted = mask;
  } else {
    TESSERA_CHECK(!options.positions.defined(),
                  "backbone: with explicit positions and no cache the mask must have {} keys (the "
                  "call's rows), got {}",
                  n, mask.key_length());
    fitted = fit_mask_keys(mask, begin, n);
  }
  nn_detail::CallContext context;
  context.mask = &*fitted;
  context.attention.scale = c.resolved_softmax_scale();
  context.attention.backend = options.attention_backend;
  // The tiled CPU kernel takes head dims in [kMinHeadDim, kMaxHeadDim]; small test models (and
  // other head dims) run on the dense reference instead of failing.
  if (context.attention.backend == AttentionBackend::automatic && dev.is_cpu() &&
      (c.head_dim() < kMinHeadDim || c.head_dim() > kMaxHeadDim)) {
    context.attention.backend = AttentionBackend::reference;
  }
  if (c.rope != RopeKind::none) {
    RopeSpec spec{c.rope,      c.head_dim(), c.rope_base, c.condition_tokens,
                  c.rope_grid, c.rope_prefix};
    RotaryTable table = rotary_table(spec, positions);
    context.rotary = RotaryTable{table.cos.unsqueeze(1), table.sin.unsqueeze(1)};
  }
  context.cache = cache;
  context.cache_start = begin;
  context.generator = options.generator;
  context.training = training;
  TESSERA_CHECK(!options.branch || c.branch_blocks > 0,
                "backbone: a branch forward was asked for, but the backbone has no branch blocks "
                "(branch_blocks = 0)");
  TESSERA_CHECK(!options.branch || cache == nullptr,
                "backbone: a branch forward cannot use a KV cache (the cache holds the ordinary "
                "blocks' keys and values)");
  context.branch = options.branch;

  // See Note [Decoding against a KV cache]: decoding is inference.
  std::optional<at::NoGradGuard> no_grad;
  if (cache != nullptr) no_grad.emplace();
  BackboneOutput out;
  out.hidden = net_->forward(all_inputs, condition, positions, context);
  out.condition = condition;
  if (cache != nullptr) cache->set_length(begin + n);
  return out;
}

KVCache Backbone::make_kv_cache(int64_t batch, int64_t capacity,
                                std::optional<at::ScalarType> dtype) const {
  const at::Device dev = device();
  if (!dtype) {
    dtype = at::autocast::is_autocast_enabled(dev.type())
                ? at::autocast::get_autocast_dtype(dev.type())
                : at::kFloat;
  }
  return KVCache(config_.depth, batch, config_.num_heads, config_.head_dim(),
                 capacity > 0 ? capacity : max_length(), *dtype, dev);
}

// --- size and cost ------------------------------------------------------------------------------

int64_t Backbone::num_parameters() const {
  int64_t count = 0;
  for (const auto& p : net_->parameters()) count += p.numel();
  return count;
}

double Backbone::forward_flops_per_token(double attended_keys) const {
  const auto c = static_cast<double>(config_.width);
  const auto h = static_cast<double>(config_.resolved_mlp_hidden());
  double input = 0;
  if (config_.input == InputKind::vectors) {
    input = 2.0 * static_cast<double>(config_.input_channels) * c;
  }
  const double mlp = (config_.mlp == MlpKind::swiglu ? 3.0 : 2.0) * 2.0 * c * h;
  const double per_layer = 2.0 * 3.0 * c * c + 2.0 * c * c + mlp + 4.0 * c * attended_keys;
  return input + static_cast<double>(config_.depth) * per_layer;
}

double Backbone::forward_flops(const BlockMask& mask) const {
  const auto c = static_cast<double>(config_.width);
  const auto tokens = static_cast<double>(mask.query_length());
  const auto visible = static_cast<double>(mask.visible_count());
  // Every token's matrix products, then the attention of the exact visible pairs.
  double flops = tokens * forward_flops_per_token(0.0) +
                 static_cast<double>(config_.depth) * 4.0 * c * visible;
  if (config_.adaln == AdaLnKind::per_block) {
    flops += static_cast<double>(config_.depth) * 2.0 * c * 6.0 * c;
  } else if (config_.adaln == AdaLnKind::shared) {
    flops += 2.0 * c * 6.0 * c;
  }
  if (config_.final_norm == FinalNorm::adaln) flops += 2.0 * c * 2.0 * c;
  return flops;
}

std::string Backbone::summary() const {
  const double per_token = forward_flops_per_token(static_cast<double>(max_length()) / 2.0);
  return fmt::format(
      "backbone: {} blocks, width {}, {} heads (head dim {}), {} positions in {} segments, "
      "{:.2f}M parameters, {:.3f} GFLOP per token forward at {} attended keys",
      config_.depth, config_.width, config_.num_heads, head_dim(), max_length(),
      config_.segments.size(), static_cast<double>(num_parameters()) / 1e6, per_token / 1e9,
      max_length() / 2);
}

// --- persistence --------------------------------------------------------------------------------

std::vector<at::Tensor> Backbone::parameters() const { return net_->parameters(); }

std::map<std::string, at::Tensor> Backbone::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : net_->named_parameters(true)) out.emplace(item.key(), item.value());
  for (const auto& item : net_->named_buffers(true)) out.emplace(item.key(), item.value());
  return out;
}

StateDictLoadReport Backbone::load_state_dict(const std::map<std::string, at::Tensor>& tensors,
                                              const StateDictLoadOptions& options) {
  return load_state_dict_into(state_dict(), tensors, options, var_derived_buffer_keys(),
                              "backbone");
}

void Backbone::save(const std::filesystem::path& path) const {
  save_safetensors(path, state_dict(), {{kConfigMetadataKey, config_to_json(config_).dump()}});
}

StateDictLoadReport Backbone::load(const std::filesystem::path& path,
                                   const StateDictLoadOptions& options) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  try {
    return load_state_dict(file.all(), options);
  } catch (const Error& e) {
    TESSERA_FAIL("{}: {}", path.string(), e.what());
  }
}

Backbone Backbone::from_file(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto it = file.metadata().find(kConfigMetadataKey);
  TESSERA_CHECK(it != file.metadata().end(),
                "{}: no backbone config in the metadata (key '{}'); was it written by "
                "Backbone::save?",
                path.string(), kConfigMetadataKey);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("{}: the backbone config in the metadata is not valid JSON: {}", path.string(),
                 e.what());
  }
  Backbone backbone(config_from_json<BackboneConfig>(json, kConfigMetadataKey));
  backbone.load(path);
  return backbone;
}

std::vector<std::pair<std::string, std::string>> Backbone::llamagen_key_renames() {
  return {{"tok_embeddings.", "word_embed."},
          {"cls_embedding.embedding_table.", "class_emb."},
          {".attention.wqkv.", ".attn.mat_qkv."},
          {".attention.wo.", ".attn.proj."},
          {".attention_norm.", ".norm1."},
          {".ffn_norm.", ".norm2."},
          {".feed_forward.", ".ffn."},
          {"layers.", "blocks."}};
}

void Backbone::set_training(bool training) { net_->train(training); }
bool Backbone::is_training() const { return net_->is_training(); }
void Backbone::to(at::Device device) { net_->to(device); }

at::Device Backbone::device() const {
  const auto params = net_->parameters();
  return params.empty() ? at::Device(at::kCPU) : params.front().device();
}

std::shared_ptr<torch::nn::Module> Backbone::module() const { return net_; }

}  // namespace tessera
