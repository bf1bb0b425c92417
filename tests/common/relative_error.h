#pragma once
// The error measure of the parity fixtures' READMEs: ‖out − ref‖ / ‖ref‖ in float64.

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::testing {

/// ‖out − reference‖ / ‖reference‖, computed in float64.
inline double relative_error(const at::Tensor& out, const at::Tensor& reference) {
  const at::Tensor r = reference.to(at::kDouble);
  return (out.to(at::kDouble) - r).norm().item<double>() / r.norm().item<double>();
}

/// "1,1,2,2,4" (a metadata list) as integers.
inline std::vector<int64_t> metadata_integers(const std::string& text) {
  std::vector<int64_t> values;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    values.push_back(std::stoll(text.substr(begin, end - begin)));
    begin = end + 1;
  }
  return values;
}

}  // namespace tessera::testing
