#include "tessera/compat/mar_diffloss.h"

#include <fmt/format.h>

#include "compat/reference_metadata.h"
#include "tessera/core/error.h"

namespace tessera {

namespace {

at::IntArrayRef shape_of(const std::map<std::string, at::Tensor>& state_dict,
                         const std::string& key) {
  return compat_detail::reference_tensor_shape(state_dict, key, "MAR DiffLoss",
                                               "a MAR state dict with its DiffLoss head");
}

}  // namespace

DiffusionHeadConfig mar_diffloss_head_config(int64_t token_channels, int64_t hidden_width,
                                             int64_t width, int64_t depth) {
  DiffusionHeadConfig config;
  config.mlp.token_channels = token_channels;
  config.mlp.hidden_width = hidden_width;
  config.mlp.width = width;
  config.mlp.depth = depth;
  config.mlp.frequency_embedding_size = 256;
  config.learn_variance = true;
  config.beta_schedule = BetaSchedule::cosine;
  config.training_steps = 1000;
  config.batch_multiplier = 4;
  config.validate();
  return config;
}

DiffusionHeadConfig mar_diffloss_config(const std::map<std::string, at::Tensor>& sd) {
  DiffusionHeadConfig config;
  AdaLnMlpConfig& mlp = config.mlp;
  const auto input_proj = shape_of(sd, "diffloss.net.input_proj.weight");
  mlp.token_channels = input_proj[1];
  mlp.width = input_proj[0];
  mlp.hidden_width = shape_of(sd, "diffloss.net.cond_embed.weight")[1];
  mlp.frequency_embedding_size = shape_of(sd, "diffloss.net.time_embed.mlp.0.weight")[1];
  mlp.depth = 0;
  while (sd.contains(fmt::format("diffloss.net.res_blocks.{}.in_ln.weight", mlp.depth))) {
    ++mlp.depth;
  }
  const int64_t outputs = shape_of(sd, "diffloss.net.final_layer.linear.weight")[0];
  TESSERA_CHECK(outputs == mlp.token_channels || outputs == 2 * mlp.token_channels,
                "MAR DiffLoss: the final layer has {} outputs for {} token channels (expected "
                "C, or 2C with the learned variance)",
                outputs, mlp.token_channels);
  DiffusionHeadConfig read =
      mar_diffloss_head_config(mlp.token_channels, mlp.hidden_width, mlp.width, mlp.depth);
  read.mlp.frequency_embedding_size = mlp.frequency_embedding_size;
  read.learn_variance = outputs == 2 * mlp.token_channels;
  read.validate();
  return read;
}

std::map<std::string, at::Tensor> mar_diffloss_state_dict(
    const std::map<std::string, at::Tensor>& sd) {
  static const std::string prefix = "diffloss.";
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, tensor] : sd) {
    if (key.starts_with(prefix)) out.emplace(key.substr(prefix.size()), tensor);
  }
  TESSERA_CHECK(!out.empty(), "MAR DiffLoss: the state dict has no diffloss.* tensors");
  return out;
}

}  // namespace tessera
