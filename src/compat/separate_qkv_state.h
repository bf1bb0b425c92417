#pragma once
// Tessera's state dict for a convolutional tokenizer from a reference's whose attention blocks
// (taming-transformers' AttnBlock, as LlamaGen's VQModel and MAR's AutoencoderKL keep it) hold
// separate 1x1 `q`, `k`, `v` convolutions where Tessera's AttentionBlock has one `qkv`
// convolution with 3C outputs: stacking q, k, v along the output channels is that convolution
// exactly. Every problem is named in the reference's names.

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace tessera::compat_detail {

struct SeparateQkvMapping {
  /// The reference's name of a Tessera key; for a `.qkv.` key, the name of its `q` part (the
  /// `.q.` in it is replaced by `.k.` and `.v.` for the others).
  std::function<std::string(const std::string&)> reference_name;
  std::set<std::string>
      model_only{};  ///< Tessera keys the reference lacks: the model's values kept
  /// Reference keys that are not loaded (training statistics, loss networks).
  std::function<bool(const std::string&)> skipped = [](const std::string&) { return false; };
};

/// `model_state` (Tessera's names and shapes) filled from `reference`, strictly: throws
/// tessera::Error listing every missing, unexpected or misshapen reference key, prefixed by
/// `what`.
std::map<std::string, at::Tensor> from_separate_qkv_state(
    const std::map<std::string, at::Tensor>& model_state,
    const std::map<std::string, at::Tensor>& reference, const SeparateQkvMapping& mapping,
    std::string_view what);

}  // namespace tessera::compat_detail
