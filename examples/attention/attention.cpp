// Block-sparse attention on its own: build a BlockMask from a token layout, run tessera::attention
// forward and backward, and check both against the dense reference.
//
//   example_attention [batch] [heads]
//
// A BlockMask stores one interval of visible keys per query row (two integers), never an L x L
// matrix; the kernels skip key tiles no row of a query tile can see and mask only the tiles that
// are partly visible. See docs/attention.md.
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"
#include "tessera/attention/token_layout.h"
#include "tessera/core/error.h"

namespace {

// Largest |a − b| over every element, in double.
double max_difference(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int64_t batch = argc > 1 ? std::stoll(argv[1]) : 2;
    const int64_t heads = argc > 2 ? std::stoll(argv[2]) : 4;
    const int64_t head_dim = 64;  // the fast kernels take 32 … 256 (kMinHeadDim, kMaxHeadDim)

    // VAR's token pyramid: scale s holds s² tokens, 680 in all. Its training mask is block-causal
    // (a token sees its own scale and every coarser one); HMAR's is block-diagonal.
    const tessera::TokenLayout layout =
        tessera::TokenLayout::pyramid({1, 2, 3, 4, 5, 6, 8, 10, 13, 16});
    const int64_t L = layout.length();
    const std::vector<tessera::BlockMask> masks = {
        tessera::BlockMask::block_causal(layout),
        tessera::BlockMask::block_diagonal(layout),
        tessera::BlockMask::banded(layout, 32),
        // Any per-row interval works too: here every row sees the 100 keys before it and itself.
        [&] {
          std::vector<int64_t> begin(L), end(L);
          for (int64_t q = 0; q < L; ++q) begin[q] = q - 100, end[q] = q + 1;  // clamped to [0, L]
          return tessera::BlockMask::from_intervals(begin, end, L, layout);
        }(),
    };

    at::manual_seed(0);
    for (const tessera::BlockMask& mask : masks) {
      std::printf("%s\n", mask.summary().c_str());
      // Leaf tensors [B, H, L, D] that collect gradients. (ATen's factories ignore requires_grad
      // in TensorOptions; torch::randn would honour it but needs the heavier torch headers.)
      at::Tensor q = at::randn({batch, heads, L, head_dim}).requires_grad_();
      at::Tensor k = at::randn({batch, heads, L, head_dim}).requires_grad_();
      at::Tensor v = at::randn({batch, heads, L, head_dim}).requires_grad_();

      // The CPU kernel (AttentionBackend::automatic picks it for CPU tensors; CUDA tensors get the
      // CUDA kernel when Tessera was built with it, see docs/cuda.md).
      const at::Tensor out = tessera::attention(q, k, v, mask);
      const at::Tensor upstream = at::randn_like(out);  // a made-up dL/d(out)
      out.backward(upstream);
      const at::Tensor dq = q.grad().clone(), dk = k.grad().clone(), dv = v.grad().clone();

      // The same through the dense reference in float64: the kernels are checked against it.
      at::Tensor q64 = q.detach().to(at::kDouble).requires_grad_();
      at::Tensor k64 = k.detach().to(at::kDouble).requires_grad_();
      at::Tensor v64 = v.detach().to(at::kDouble).requires_grad_();
      tessera::AttentionOptions reference;
      reference.backend = tessera::AttentionBackend::reference;
      const at::Tensor expected = tessera::attention(q64, k64, v64, mask, reference);
      expected.backward(upstream.to(at::kDouble));

      const double errors[] = {max_difference(out, expected), max_difference(dq, q64.grad()),
                               max_difference(dk, k64.grad()), max_difference(dv, v64.grad())};
      std::printf("  max |error| vs float64 reference: out %.2e, dq %.2e, dk %.2e, dv %.2e\n",
                  errors[0], errors[1], errors[2], errors[3]);
      for (const double error : errors) {
        TESSERA_CHECK(error < 1e-4, "the kernel disagrees with the reference by {}", error);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
