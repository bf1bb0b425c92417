#pragma once
// Reading a reference checkpoint's configuration from safetensors __metadata__ strings (the keys
// tools/convert_checkpoint.py and the parity fixtures record): whole integers, numbers and Python
// booleans, each error naming the source ("VAR metadata", "LlamaGen metadata"), the key and the
// text.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace tessera::compat_detail {

using Metadata = std::map<std::string, std::string>;

/// `text` as a whole integer.
int64_t parse_metadata_integer(const std::string& text, const std::string& key,
                               std::string_view source);
/// `text` as a whole number.
double parse_metadata_number(const std::string& text, const std::string& key,
                             std::string_view source);
/// metadata[key] as it is; a missing key is an error.
const std::string& metadata_text(const Metadata& metadata, const std::string& key,
                                 std::string_view source);
/// metadata[key] as a whole integer; a missing key is an error.
int64_t metadata_integer(const Metadata& metadata, const std::string& key, std::string_view source);
/// metadata[key] as a whole integer; `fallback` when missing.
int64_t metadata_integer_or(const Metadata& metadata, const std::string& key, int64_t fallback,
                            std::string_view source);
/// metadata[key] as a number; a missing key is an error.
double metadata_number(const Metadata& metadata, const std::string& key, std::string_view source);
/// metadata[key] as True/False (Python's spelling, or true/false/1/0); `fallback` when missing.
bool metadata_bool(const Metadata& metadata, const std::string& key, bool fallback,
                   std::string_view source);

/// Throws "<source>: <key> is <recorded>, but the tensors say <actual>" when `metadata` records
/// `key` as another integer than `actual`; nothing when the key is absent.
void check_metadata_integer(const Metadata& metadata, const std::string& key, int64_t actual,
                            std::string_view source);

/// The shape of state_dict[key]; a missing key is an error "<what>: '<key>' is missing (not
/// <expected>?)", e.g. what "MAR VAE", expected "an AutoencoderKL state dict".
at::IntArrayRef reference_tensor_shape(const std::map<std::string, at::Tensor>& state_dict,
                                       const std::string& key, std::string_view what,
                                       std::string_view expected);

}  // namespace tessera::compat_detail
