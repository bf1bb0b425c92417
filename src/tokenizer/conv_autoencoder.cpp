// The convolutional encoder and decoder, and the module plumbing shared by the tokenizers.
// See Note [Reference module paths] in nn_modules.h for why every name below is what it is.

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <set>

#include "tokenizer/nn_modules.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"

namespace tessera::tokenizer_detail {

// --- module plumbing
// ------------------------------------------------------------------------------

std::map<std::string, at::Tensor> module_state_dict(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> state;
  for (const auto& item : module.named_parameters()) state.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers()) state.emplace(item.key(), item.value());
  return state;
}

std::vector<at::Tensor> module_parameters(const torch::nn::Module& module) {
  return module.parameters();
}

at::Device module_device(const torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return p.device();
  for (const auto& b : module.buffers()) return b.device();
  return at::kCPU;
}

void load_module_state_dict(torch::nn::Module& module,
                            const std::map<std::string, at::Tensor>& tensors,
                            const std::string& what) {
  std::map<std::string, at::Tensor> targets = module_state_dict(module);
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (!it->second.defined() || it->second.sizes() != target.sizes()) {
      mismatched.push_back(fmt::format(
          "{} (expected {}, got {})", name, target.sizes(),
          it->second.defined() ? fmt::format("{}", it->second.sizes()) : std::string("undefined")));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!targets.contains(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    auto list = [](const std::vector<std::string>& names) {
      constexpr size_t kShown = 8;
      std::string text;
      for (size_t i = 0; i < names.size() && i < kShown; ++i) {
        text += (i == 0 ? "" : ", ") + names[i];
      }
      if (names.size() > kShown) text += fmt::format(", ... ({} in all)", names.size());
      return text.empty() ? std::string("none") : text;
    };
    TESSERA_FAIL(
        "{}: the state dict does not match the model: missing keys: {}; unexpected keys: {}; "
        "shape mismatches: {}",
        what, list(missing), list(unexpected), list(mismatched));
  }
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const at::Tensor& source = tensors.at(name);
    TESSERA_CHECK(
        at::isFloatingType(source.scalar_type()) || source.scalar_type() == target.scalar_type(),
        "{}: '{}' has type {}, expected {}", what, name, source.scalar_type(),
        target.scalar_type());
    target.copy_(source);
  }
}

void initialize_conv_parameters(torch::nn::Module& module, uint64_t seed) {
  at::Generator generator = make_cpu_generator(seed);
  const auto parameters = module.named_parameters();
  at::NoGradGuard no_grad;
  for (const auto& item : parameters) {
    const std::string& name = item.key();
    at::Tensor weight = item.value();
    if (weight.dim() != 4 || (!name.ends_with(".weight") && name != "weight")) continue;
    const int64_t fan_in = weight.size(1) * weight.size(2) * weight.size(3);
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    weight.uniform_(-bound, bound, generator);
    const std::string bias_name =
        name.substr(0, name.size() - std::string("weight").size()) + "bias";
    if (const at::Tensor* bias = parameters.find(bias_name)) {
      at::Tensor b = *bias;
      b.uniform_(-bound, bound, generator);
    }
  }
}

torch::nn::Conv2d make_conv(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                            int64_t stride, int64_t padding) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, kernel_size)
                               .stride(stride)
                               .padding(padding < 0 ? kernel_size / 2 : padding));
}

torch::nn::GroupNorm make_group_norm(int64_t channels, const ConvAutoencoderConfig& config) {
  TESSERA_CHECK(config.norm_groups > 0 && channels % config.norm_groups == 0,
                "GroupNorm cannot split {} channels into {} groups (channels must be divisible by "
                "norm_groups)",
                channels, config.norm_groups);
  return torch::nn::GroupNorm(
      torch::nn::GroupNormOptions(config.norm_groups, channels).eps(config.norm_eps).affine(true));
}

void check_images(const at::Tensor& images, int64_t channels, int64_t downsampling_factor,
                  const char* what) {
  TESSERA_CHECK(images.defined(), "{}: images are an undefined tensor", what);
  TESSERA_CHECK(images.dim() == 4, "{}: expected images [B, C, H, W], got shape {}", what,
                images.sizes());
  TESSERA_CHECK(at::isFloatingType(images.scalar_type()),
                "{}: expected floating-point images in [-1, 1], got {}", what,
                images.scalar_type());
  TESSERA_CHECK(images.size(0) > 0, "{}: empty batch", what);
  TESSERA_CHECK(images.size(1) == channels, "{}: expected {} image channels, got {} (shape {})",
                what, channels, images.size(1), images.sizes());
  TESSERA_CHECK(images.size(2) > 0 && images.size(3) > 0 &&
                    images.size(2) % downsampling_factor == 0 &&
                    images.size(3) % downsampling_factor == 0,
                "{}: image size {}x{} is not divisible by the downsampling factor {}", what,
                images.size(2), images.size(3), downsampling_factor);
}

// --- blocks
// ---------------------------------------------------------------------------------------

ResnetBlock::ResnetBlock(int64_t in_channels, int64_t out_channels,
                         const ConvAutoencoderConfig& config)
    : dropout_(config.dropout) {
  norm1_ = register_module("norm1", make_group_norm(in_channels, config));
  conv1_ = register_module("conv1", make_conv(in_channels, out_channels, 3));
  norm2_ = register_module("norm2", make_group_norm(out_channels, config));
  conv2_ = register_module("conv2", make_conv(out_channels, out_channels, 3));
  if (in_channels != out_channels) {
    nin_shortcut_ = register_module("nin_shortcut", make_conv(in_channels, out_channels, 1));
  }
}

at::Tensor ResnetBlock::forward(const at::Tensor& x) {
  at::Tensor h = conv1_->forward(at::silu(norm1_->forward(x)));
  h = at::silu(norm2_->forward(h));
  if (dropout_ > 0 && is_training()) h = at::dropout(h, dropout_, /*train=*/true);
  h = conv2_->forward(h);
  return (nin_shortcut_ ? nin_shortcut_->forward(x) : x) + h;
}

AttentionBlock::AttentionBlock(int64_t channels, const ConvAutoencoderConfig& config)
    : channels_(channels) {
  norm_ = register_module("norm", make_group_norm(channels, config));
  qkv_ = register_module("qkv", make_conv(channels, 3 * channels, 1));
  proj_out_ = register_module("proj_out", make_conv(channels, channels, 1));
}

at::Tensor AttentionBlock::forward(const at::Tensor& x) {
  const at::Tensor qkv = qkv_->forward(norm_->forward(x));
  const int64_t batch = qkv.size(0), height = qkv.size(2), width = qkv.size(3);
  const int64_t positions = height * width;
  const auto parts = qkv.reshape({batch, 3, channels_, positions}).unbind(1);
  const at::Tensor q = parts[0].permute({0, 2, 1});  // [B, HW, C]
  const at::Tensor k = parts[1];                     // [B, C, HW]
  const at::Tensor v = parts[2];                     // [B, C, HW]
  const double scale = 1.0 / std::sqrt(static_cast<double>(channels_));
  const at::Tensor weights = at::softmax(at::bmm(q, k).mul(scale), 2);  // [B, HW_q, HW_k]
  const at::Tensor h = at::bmm(v, weights.permute({0, 2, 1}));          // [B, C, HW_q]
  return x + proj_out_->forward(h.reshape({batch, channels_, height, width}));
}

Downsample2x::Downsample2x(int64_t channels) {
  conv_ = register_module("conv", make_conv(channels, channels, 3, /*stride=*/2, /*padding=*/0));
}

at::Tensor Downsample2x::forward(const at::Tensor& x) {
  return conv_->forward(at::constant_pad_nd(x, {0, 1, 0, 1}, 0));
}

Upsample2x::Upsample2x(int64_t channels) {
  conv_ = register_module("conv", make_conv(channels, channels, 3));
}

at::Tensor Upsample2x::forward(const at::Tensor& x) {
  return conv_->forward(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
}

at::Tensor ResolutionLevel::forward_blocks(at::Tensor h) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    h = blocks[i]->forward(h);
    if (!attentions.empty()) h = attentions[i]->forward(h);
  }
  return h;
}

MiddleBlocks::MiddleBlocks(int64_t channels, const ConvAutoencoderConfig& config) {
  block_1_ = register_module("block_1", std::make_shared<ResnetBlock>(channels, channels, config));
  if (config.middle_attention) {
    attn_1_ = register_module("attn_1", std::make_shared<AttentionBlock>(channels, config));
  }
  block_2_ = register_module("block_2", std::make_shared<ResnetBlock>(channels, channels, config));
}

at::Tensor MiddleBlocks::forward(const at::Tensor& x) {
  at::Tensor h = block_1_->forward(x);
  if (attn_1_) h = attn_1_->forward(h);
  return block_2_->forward(h);
}

namespace {

// Registers `level`'s blocks and attentions as ModuleLists "block" and "attn" (the reference
// registers an empty "attn" list on levels without attention; it holds no parameters either way).
void register_level_lists(ResolutionLevel& level) {
  auto block_list = level.register_module("block", torch::nn::ModuleList());
  for (const auto& block : level.blocks) block_list->push_back(block);
  auto attn_list = level.register_module("attn", torch::nn::ModuleList());
  for (const auto& attn : level.attentions) attn_list->push_back(attn);
}

}  // namespace

ConvEncoder::ConvEncoder(const ConvAutoencoderConfig& config, int64_t out_channels) {
  config.validate();
  const size_t levels = config.channel_multipliers.size();
  conv_in_ = register_module("conv_in", make_conv(config.image_channels, config.base_channels, 3));
  auto down_list = register_module("down", torch::nn::ModuleList());
  int64_t block_in = config.base_channels;  // in_ch_mult = (1,) + ch_mult
  for (size_t level_index = 0; level_index < levels; ++level_index) {
    auto level = std::make_shared<ResolutionLevel>();
    const int64_t block_out = config.level_channels(level_index);
    for (int64_t i = 0; i < config.res_blocks_per_level; ++i) {
      level->blocks.push_back(std::make_shared<ResnetBlock>(block_in, block_out, config));
      block_in = block_out;
      if (level_index == levels - 1 && config.lowest_level_attention) {
        level->attentions.push_back(std::make_shared<AttentionBlock>(block_in, config));
      }
    }
    register_level_lists(*level);
    if (level_index != levels - 1) {
      level->downsample =
          level->register_module("downsample", std::make_shared<Downsample2x>(block_in));
    }
    down_list->push_back(level);
    down_.push_back(level);
  }
  mid_ = register_module("mid", std::make_shared<MiddleBlocks>(block_in, config));
  norm_out_ = register_module("norm_out", make_group_norm(block_in, config));
  conv_out_ = register_module("conv_out", make_conv(block_in, out_channels, 3));
}

at::Tensor ConvEncoder::forward(const at::Tensor& images) {
  at::Tensor h = conv_in_->forward(images);
  for (const auto& level : down_) {
    h = level->forward_blocks(h);
    if (level->downsample) h = level->downsample->forward(h);
  }
  h = mid_->forward(h);
  return conv_out_->forward(at::silu(norm_out_->forward(h))).contiguous();
}

ConvDecoder::ConvDecoder(const ConvAutoencoderConfig& config, int64_t in_channels) {
  config.validate();
  const size_t levels = config.channel_multipliers.size();
  int64_t block_in = config.level_channels(levels - 1);
  conv_in_ = register_module("conv_in", make_conv(in_channels, block_in, 3));
  mid_ = register_module("mid", std::make_shared<MiddleBlocks>(block_in, config));
  // Built from the lowest resolution up, as the reference does, but registered in level order
  // (up.0 is the full-resolution level): the reference prepends each level to its ModuleList.
  up_.resize(levels);
  const bool lowest_level_attention =
      config.decoder_lowest_level_attention.value_or(config.lowest_level_attention);
  for (size_t level_index = levels; level_index-- > 0;) {
    auto level = std::make_shared<ResolutionLevel>();
    const int64_t block_out = config.level_channels(level_index);
    for (int64_t i = 0; i < config.res_blocks_per_level + 1; ++i) {
      level->blocks.push_back(std::make_shared<ResnetBlock>(block_in, block_out, config));
      block_in = block_out;
      if (level_index == levels - 1 && lowest_level_attention) {
        level->attentions.push_back(std::make_shared<AttentionBlock>(block_in, config));
      }
    }
    register_level_lists(*level);
    if (level_index != 0) {
      level->upsample = level->register_module("upsample", std::make_shared<Upsample2x>(block_in));
    }
    up_[level_index] = level;
  }
  auto up_list = register_module("up", torch::nn::ModuleList());
  for (const auto& level : up_) up_list->push_back(level);
  norm_out_ = register_module("norm_out", make_group_norm(block_in, config));
  conv_out_ = register_module("conv_out", make_conv(block_in, config.image_channels, 3));
}

// Note [Channels-last decoding of large images]
// oneDNN runs convolutions in a channels-last (blocked) layout; NCHW activations are reordered to
// it and back around every convolution. For large images that reordering is a visible share of the
// decode (VAR's 256-px decoder: docs/performance.md), so their activations are kept channels-last
// from the first convolution on; ATen's group norm, SiLU and nearest upsampling keep the layout.
// Small images (the shipped 32-px models) keep NCHW, and with it the exact bits their recorded
// samples have (docs/evaluation.md, "The quality check").
constexpr int64_t kChannelsLastMinImageSide = 128;

at::Tensor ConvDecoder::forward(const at::Tensor& latent) {
  int64_t image_side = latent.size(2);
  for (const auto& level : up_) image_side *= level->upsample ? 2 : 1;
  const at::Tensor input = latent.device().is_cpu() && image_side >= kChannelsLastMinImageSide
                               ? latent.contiguous(at::MemoryFormat::ChannelsLast)
                               : latent;
  at::Tensor h = mid_->forward(conv_in_->forward(input));
  for (size_t level_index = up_.size(); level_index-- > 0;) {
    const auto& level = up_[level_index];
    h = level->forward_blocks(h);
    if (level->upsample) h = level->upsample->forward(h);
  }
  return conv_out_->forward(at::silu(norm_out_->forward(h)));
}

}  // namespace tessera::tokenizer_detail
