#include "tessera/core/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "tessera/core/atomic_file.h"

namespace tessera {
namespace config_detail {

namespace {
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string closest_key(std::string_view key, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, key.size() / 3) + 1;  // only suggest close names
  for (const auto& candidate : known) {
    const size_t d = edit_distance(key, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

std::string json_type_name(const nlohmann::json& j) {
  if (j.is_number_integer()) return "integer";
  if (j.is_number_float()) return "number";
  return j.type_name();
}

std::string json_excerpt(const nlohmann::json& j) {
  std::string text = j.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

std::string join_path(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

}  // namespace config_detail

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "cannot open config '{}'", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  nlohmann::json j;
  try {
    // Even without exceptions for syntax errors, nlohmann throws out_of_range for a number that
    // overflows a double (found by fuzz/fuzz_config).
    j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("'{}' is not valid JSON: {}", path.string(), e.what());
  }
  if (j.is_discarded()) {
    // Re-parse with exceptions on to get the position of the error.
    try {
      const nlohmann::json unused = nlohmann::json::parse(text, nullptr, true, true);
    } catch (const nlohmann::json::exception& e) {
      TESSERA_FAIL("'{}' is not valid JSON: {}", path.string(), e.what());
    }
    TESSERA_FAIL("'{}' is not valid JSON", path.string());
  }
  return j;
}

void write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
  write_file_atomically(path, j.dump(2) + "\n");
}

}  // namespace tessera
