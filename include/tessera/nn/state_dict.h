#pragma once
// Loading tensors into a model by parameter name, strictly or not, with a report of what did not
// fit.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

struct StateDictLoadOptions {
  /// Strict: any missing key, unexpected key or shape mismatch is an error (thrown before anything
  /// is copied). Not strict: the tensors that fit are copied and the rest reported.
  bool strict = true;
  /// Checkpoint keys starting with one of these are skipped (reported as ignored), e.g. {"head.",
  /// "head_nm."} for the head's part of a VAR checkpoint.
  std::vector<std::string> ignore_prefixes{};
  /// Applied to every checkpoint key before matching, in order: the first occurrence of `from` is
  /// replaced by `to` (e.g. {"layers.", "blocks."} for LlamaGen's names).
  std::vector<std::pair<std::string, std::string>> renames{};
};  ///< How a state dict is matched against a model's tensors.

struct ShapeMismatch {
  std::string key;  ///< the model's key
  std::vector<int64_t> expected;  ///< the model's
  std::vector<int64_t> got;       ///< the checkpoint's
};  ///< A key whose tensor has another shape in the checkpoint.

struct StateDictLoadReport {
  std::vector<std::string> loaded;  ///< copied into the model
  std::vector<std::string> missing;     ///< the model has them, the checkpoint does not
  std::vector<std::string> unexpected;  ///< the checkpoint has them, the model does not
  std::vector<std::string> ignored;     ///< skipped by ignore_prefixes or as derived buffers
  std::vector<ShapeMismatch> mismatched;  ///< shapes that differ
  /// Whether nothing was missing, unexpected or mismatched.
  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// "loaded 24; missing: blocks.0.attn.q_bias; unexpected: foo; shape mismatch: word_embed.weight
  /// (model [128, 8], checkpoint [128, 16])"
  std::string summary() const;
};  ///< What a state-dict load did, key by key.

/// Matches `source` (a checkpoint, after renames and ignores) against `destination` (the model's
/// parameters and buffers by name; the tensors share the model's storage) and copies each matching
/// tensor in, converting dtype and device, without autograd. `ignore_keys` are checkpoint keys the
/// model derives itself and skips (VAR's `lvl_1L`). Strict: throws tessera::Error naming every
/// missing key, unexpected key and shape mismatch, before anything is copied. `what` names the
/// model in messages.
StateDictLoadReport load_state_dict_into(const std::map<std::string, at::Tensor>& destination,
                                         const std::map<std::string, at::Tensor>& source,
                                         const StateDictLoadOptions& options,
                                         const std::vector<std::string>& ignore_keys,
                                         const std::string& what);

}  // namespace tessera
