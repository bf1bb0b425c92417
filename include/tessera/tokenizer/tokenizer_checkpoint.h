#pragma once
// Building tokenizers from a configuration, and tokenizer checkpoints.
//
// A checkpoint is one safetensors file: the tokenizer's state dict under its module paths (the
// reference implementations' key names) and, in __metadata__, "tessera.tokenizer.config" (the
// TokenizerConfig as JSON) plus whatever the caller adds (the trainer adds "tessera.step").
// Files are written atomically (temporary file, fsync, rename), so an interrupted save never
// leaves a half-written checkpoint under the real name.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "tessera/tokenizer/tokenizer.h"

namespace tessera {
/// Where a tokenizer checkpoint keeps its config in the metadata.
inline constexpr const char* kTokenizerConfigMetadataKey = "tessera.tokenizer.config";

/// A fresh tokenizer of config.kind (validated first); `seed` drives its initialisation.
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config, uint64_t seed = 0);
/// Writes the tokenizer's state dict, with its config in the metadata.
void save_tokenizer_checkpoint(const std::filesystem::path& path, const Tokenizer& tokenizer,
                               const std::map<std::string, std::string>& extra_metadata = {});

/// The tokenizer a checkpoint describes, with its weights loaded. Throws tessera::Error for a file
/// without the config metadata, an invalid config, or tensors that do not match it.
std::unique_ptr<Tokenizer> load_tokenizer_checkpoint(const std::filesystem::path& path);

}  // namespace tessera
