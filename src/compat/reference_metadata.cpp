#include "compat/reference_metadata.h"

#include <stdexcept>

#include "tessera/core/error.h"

namespace tessera::compat_detail {

int64_t parse_metadata_integer(const std::string& text, const std::string& key,
                               std::string_view source) {
  try {
    size_t used = 0;
    const int64_t v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::logic_error&) {
  }
  TESSERA_FAIL("{}: '{}' is not an integer: '{}'", source, key, text);
}

double parse_metadata_number(const std::string& text, const std::string& key,
                             std::string_view source) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::logic_error&) {
  }
  TESSERA_FAIL("{}: '{}' is not a number: '{}'", source, key, text);
}

const std::string& metadata_text(const Metadata& metadata, const std::string& key,
                                 std::string_view source) {
  const auto it = metadata.find(key);
  TESSERA_CHECK(it != metadata.end(), "{}: '{}' is missing", source, key);
  return it->second;
}

int64_t metadata_integer(const Metadata& metadata, const std::string& key,
                         std::string_view source) {
  return parse_metadata_integer(metadata_text(metadata, key, source), key, source);
}

int64_t metadata_integer_or(const Metadata& metadata, const std::string& key, int64_t fallback,
                            std::string_view source) {
  const auto it = metadata.find(key);
  return it == metadata.end() ? fallback : parse_metadata_integer(it->second, key, source);
}

double metadata_number(const Metadata& metadata, const std::string& key, std::string_view source) {
  return parse_metadata_number(metadata_text(metadata, key, source), key, source);
}

bool metadata_bool(const Metadata& metadata, const std::string& key, bool fallback,
                   std::string_view source) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) return fallback;
  if (it->second == "True" || it->second == "true" || it->second == "1") return true;
  if (it->second == "False" || it->second == "false" || it->second == "0") return false;
  TESSERA_FAIL("{}: '{}' must be True or False, got '{}'", source, key, it->second);
}

void check_metadata_integer(const Metadata& metadata, const std::string& key, int64_t actual,
                            std::string_view source) {
  if (!metadata.contains(key)) return;
  const int64_t recorded = metadata_integer(metadata, key, source);
  TESSERA_CHECK(recorded == actual, "{}: {} is {}, but the tensors say {}", source, key, recorded,
                actual);
}

at::IntArrayRef reference_tensor_shape(const std::map<std::string, at::Tensor>& state_dict,
                                       const std::string& key, std::string_view what,
                                       std::string_view expected) {
  const auto it = state_dict.find(key);
  TESSERA_CHECK(it != state_dict.end(), "{}: '{}' is missing (not {}?)", what, key, expected);
  return it->second.sizes();
}

}  // namespace tessera::compat_detail
