#include "tessera/nn/state_dict.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "tessera/core/error.h"

namespace tessera {

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string apply_renames(std::string key,
                          const std::vector<std::pair<std::string, std::string>>& renames) {
  for (const auto& [from, to] : renames) {
    if (from.empty()) continue;
    const auto at = key.find(from);
    if (at != std::string::npos) key.replace(at, from.size(), to);
  }
  return key;
}

bool starts_with_any(const std::string& key, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return key.starts_with(p); });
}

}  // namespace

std::string StateDictLoadReport::summary() const {
  std::string out = fmt::format("loaded {}", loaded.size());
  if (!missing.empty()) out += fmt::format("; missing: {}", fmt::join(missing, ", "));
  if (!unexpected.empty()) out += fmt::format("; unexpected: {}", fmt::join(unexpected, ", "));
  if (!mismatched.empty()) {
    std::vector<std::string> items;
    for (const auto& m : mismatched) {
      items.push_back(fmt::format("{} (model {}, checkpoint {})", m.key, shape_string(m.expected),
                                  shape_string(m.got)));
    }
    out += fmt::format("; shape mismatch: {}", fmt::join(items, ", "));
  }
  if (!ignored.empty()) out += fmt::format("; ignored: {}", fmt::join(ignored, ", "));
  return out;
}

StateDictLoadReport load_state_dict_into(const std::map<std::string, at::Tensor>& destination,
                                         const std::map<std::string, at::Tensor>& source,
                                         const StateDictLoadOptions& options,
                                         const std::vector<std::string>& ignore_keys,
                                         const std::string& what) {
  StateDictLoadReport report;
  std::map<std::string, at::Tensor> renamed;
  for (const auto& [raw_key, tensor] : source) {
    if (starts_with_any(raw_key, options.ignore_prefixes) ||
        std::find(ignore_keys.begin(), ignore_keys.end(), raw_key) != ignore_keys.end()) {
      report.ignored.push_back(raw_key);
      continue;
    }
    std::string key = apply_renames(raw_key, options.renames);
    TESSERA_CHECK(!renamed.contains(key),
                  "{}: checkpoint keys collide after renaming: two keys become '{}'", what, key);
    renamed.emplace(std::move(key), tensor);
  }

  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (model tensor, checkpoint tensor)
  for (const auto& [key, target] : destination) {
    auto it = renamed.find(key);
    if (it == renamed.end()) {
      report.missing.push_back(key);
      continue;
    }
    TESSERA_CHECK(it->second.defined(), "{}: checkpoint tensor '{}' is undefined", what, key);
    if (it->second.sizes() != target.sizes()) {
      report.mismatched.push_back({key, target.sizes().vec(), it->second.sizes().vec()});
      continue;
    }
    report.loaded.push_back(key);
    copies.emplace_back(target, it->second);
  }
  for (const auto& [key, tensor] : renamed) {
    if (!destination.contains(key)) report.unexpected.push_back(key);
  }

  if (options.strict && !report.complete()) {
    TESSERA_FAIL(
        "{}: the checkpoint does not match the model ({} missing, {} unexpected, {} "
        "shape mismatches): {}",
        what, report.missing.size(), report.unexpected.size(), report.mismatched.size(),
        report.summary());
  }
  at::NoGradGuard no_grad;
  for (auto& [target, tensor] : copies) target.copy_(tensor);
  return report;
}

}  // namespace tessera
