#pragma once
// Key lists dumped from a reference implementation's constructors (tests/compat/data/*.txt, one
// "key (d0, d1, ...) torch.dtype" per line, '#' lines are comments): a state dict of zeros with
// exactly those names, shapes and dtypes, so that a test can check a preset's layout against the
// reference module without its weights.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/source_paths.h"

namespace tessera::testing {

/// The key list tests/compat/data/`name` as zero tensors.
inline std::map<std::string, at::Tensor> reference_key_list(const std::string& name) {
  std::ifstream in(tessera::testing::source_dir() / "tests" / "compat" / "data" / name);
  EXPECT_TRUE(in.good()) << name;
  std::map<std::string, at::Tensor> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t open = line.find('('), close = line.find(')');
    const std::string key = line.substr(0, open - 1);
    std::vector<int64_t> shape;
    std::stringstream dims(line.substr(open + 1, close - open - 1));
    std::string dim;
    while (std::getline(dims, dim, ',')) {
      if (dim.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(dim));
    }
    const bool integer = line.find("int64") != std::string::npos;
    out[key] = at::zeros(shape, integer ? at::kLong : at::kFloat);
  }
  return out;
}

}  // namespace tessera::testing
