#include "compat/separate_qkv_state.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera::compat_detail {

namespace {

std::string with_projection(std::string q_key, const char* projection) {
  const size_t at = q_key.rfind(".q.");
  TESSERA_CHECK(at != std::string::npos, "separate q/k/v: '{}' names no q convolution", q_key);
  return q_key.replace(at + 1, 1, projection);
}

}  // namespace

std::map<std::string, at::Tensor> from_separate_qkv_state(
    const std::map<std::string, at::Tensor>& model_state,
    const std::map<std::string, at::Tensor>& reference, const SeparateQkvMapping& mapping,
    std::string_view what) {
  std::map<std::string, at::Tensor> converted;
  std::set<std::string> used;
  std::vector<std::string> problems;
  const auto take = [&](const std::string& name, at::IntArrayRef expected) -> at::Tensor {
    used.insert(name);
    const auto it = reference.find(name);
    if (it == reference.end()) {
      problems.push_back(fmt::format("missing {}", name));
      return {};
    }
    if (it->second.sizes() != expected) {
      problems.push_back(
          fmt::format("{} has shape {}, expected {}", name, it->second.sizes(), expected));
      return {};
    }
    return it->second;
  };
  for (const auto& [key, target] : model_state) {
    if (mapping.model_only.contains(key)) {
      converted[key] = target;
      continue;
    }
    const std::string name = mapping.reference_name(key);
    if (key.find(".qkv.") == std::string::npos) {
      converted[key] = take(name, target.sizes());
      continue;
    }
    std::vector<int64_t> part_shape = target.sizes().vec();
    part_shape[0] /= 3;
    std::vector<at::Tensor> parts;
    for (const char* projection : {"q", "k", "v"}) {
      parts.push_back(take(with_projection(name, projection), part_shape));
    }
    if (parts[0].defined() && parts[1].defined() && parts[2].defined()) {
      converted[key] = at::cat(parts, 0);
    }
  }
  for (const auto& [name, tensor] : reference) {
    if (!used.contains(name) && !mapping.skipped(name)) {
      problems.push_back(fmt::format("unexpected {}", name));
    }
  }
  TESSERA_CHECK(problems.empty(), "{}: {}", what, fmt::join(problems, "; "));
  return converted;
}

}  // namespace tessera::compat_detail
