// Uses an installed Tessera from outside its tree: block-causal attention over a two-scale token
// pyramid (VAR's layout), checked against dense masked attention computed here with plain ATen
// in float64, then a safetensors round trip. Exits non-zero on any mismatch.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"
#include "tessera/attention/token_layout.h"
#include "tessera/io/safetensors.h"
#include "tessera/version.h"

int main(int argc, char** argv) {
  const std::filesystem::path scratch = argc > 1 ? argv[1] : std::filesystem::temp_directory_path();
  std::printf("Tessera %s\n", TESSERA_VERSION_STRING);

  // Scales of 1×1, 2×2 and 4×4 tokens: each token sees its own scale and every coarser one.
  const tessera::TokenLayout layout = tessera::TokenLayout::pyramid({1, 2, 4});
  const tessera::BlockMask mask = tessera::BlockMask::block_causal(layout);
  const int64_t length = layout.length();
  at::manual_seed(0);
  const at::Tensor q = at::randn({2, 3, length, 64});
  const at::Tensor k = at::randn({2, 3, length, 64});
  const at::Tensor v = at::randn({2, 3, length, 64});
  const at::Tensor out = tessera::attention(q, k, v, mask);

  // The same attention, dense, in float64: token i may see token j iff j's scale <= i's scale.
  const at::Tensor scale_of = at::cat({at::zeros({1}), at::ones({4}), at::full({16}, 2)});
  const at::Tensor allowed = scale_of.unsqueeze(0) <= scale_of.unsqueeze(1);
  const at::Tensor scores = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-1, -2)) / 8.0;
  const at::Tensor expected =
      at::matmul(at::softmax(scores.masked_fill(allowed.logical_not(), -INFINITY), -1), v.to(at::kDouble));
  const double error = (out.to(at::kDouble) - expected).abs().max().item<double>();
  std::printf("block-causal attention over %lld tokens: max |error| vs dense float64 = %.2e\n",
              static_cast<long long>(length), error);

  const std::filesystem::path file = scratch / "consumer_roundtrip.safetensors";
  tessera::save_safetensors(file, {{"out", out}}, {{"made_by", "examples/consumer"}});
  const bool same = at::equal(tessera::load_safetensors(file).at("out"), out);
  std::printf("safetensors round trip: %s\n", same ? "identical" : "DIFFERENT");
  return error < 1e-5 && same ? 0 : 1;
}
