// The attention operators of the Python package: tessera::attention_forward and
// tessera::attention_backward (CPU and CUDA kernels) and tessera::block_mask, registered with
// TORCH_LIBRARY. Their fake (meta) implementations and the autograd formula that links the two
// passes are registered from Python (python/tessera/_attention.py), as PyTorch's custom-operator
// guide does for C++ kernels.
//
// Note [The mask as tensors]
// An operator's arguments must be tensors, scalars or lists for torch.compile to trace through it,
// so a BlockMask crosses as what defines it: per query row the interval [key_begin, key_end) of
// visible keys (int64 tensors of Lq entries), the query segments that cut the kernel's query
// tiles (TokenLayout), and for a mask that is not intervals the boolean [Lq, Lk] tensor itself.
// Each call rebuilds the BlockMask from them; that is O(Lq) (O(Lq * Lk) for a dense mask, the slow
// path anyway), small beside the attention itself, and it keeps the operator free of state.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "boundary.h"
#include "tessera/attention/attention_passes.h"
#include "tessera/attention/block_mask.h"
#include "tessera/core/error.h"

namespace tessera::python {
namespace {

std::vector<int64_t> interval_bounds(const char* name, const at::Tensor& bounds) {
  TESSERA_CHECK(bounds.dim() == 1 && bounds.scalar_type() == at::kLong,
                "tessera.attention: the mask's {} must be a 1-D int64 tensor (one entry per query "
                "row), got a {} tensor of {} dimensions",
                name, c10::toString(bounds.scalar_type()), bounds.dim());
  const at::Tensor host = bounds.cpu().contiguous();
  const int64_t* data = host.const_data_ptr<int64_t>();
  return {data, data + host.numel()};
}

// Note [The mask as tensors].
// The mask's own lengths are kept: check_attention_inputs then names a mask built for other
// lengths than q and k have.
BlockMask mask_from_tensors(const at::Tensor& key_begin, const at::Tensor& key_end,
                            const std::optional<at::Tensor>& allowed,
                            c10::IntArrayRef query_segments, int64_t key_length) {
  if (allowed.has_value() && allowed->defined()) {
    TESSERA_CHECK(allowed->scalar_type() == at::kBool,
                  "tessera.attention: a dense mask must be a bool tensor (true = may attend), got "
                  "{}",
                  c10::toString(allowed->scalar_type()));
    return BlockMask::from_dense(allowed->cpu());
  }
  TokenLayout layout;
  if (!query_segments.empty()) layout = TokenLayout(query_segments.vec());
  return BlockMask::from_intervals(interval_bounds("key_begin", key_begin),
                                   interval_bounds("key_end", key_end), key_length,
                                   std::move(layout));
}

AttentionOptions options_with(std::optional<double> scale) {
  AttentionOptions options;
  options.scale = scale;
  return options;
}

std::tuple<at::Tensor, at::Tensor> attention_forward_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_begin,
    const at::Tensor& key_end, const std::optional<at::Tensor>& allowed,
    c10::IntArrayRef query_segments, int64_t key_length, std::optional<double> scale) {
  return at_python_boundary([&] {
    const BlockMask mask =
        mask_from_tensors(key_begin, key_end, allowed, query_segments, key_length);
    AttentionForward f = attention_forward(q, k, v, mask, options_with(scale));
    // Contiguous, as the fake implementation promises torch.compile (every backend's already is).
    return std::make_tuple(f.out.contiguous(), f.lse.contiguous());
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& grad_out, const at::Tensor& key_begin,
    const at::Tensor& key_end, const std::optional<at::Tensor>& allowed,
    c10::IntArrayRef query_segments, int64_t key_length, std::optional<double> scale) {
  return at_python_boundary([&] {
    const BlockMask mask =
        mask_from_tensors(key_begin, key_end, allowed, query_segments, key_length);
    AttentionGradients g =
        attention_backward(q, k, v, out, lse, grad_out, mask, options_with(scale));
    return std::make_tuple(g.dq.contiguous(), g.dk.contiguous(), g.dv.contiguous());
  });
}

at::Tensor to_tensor(const std::vector<int64_t>& values) {
  return at::tensor(values, at::TensorOptions().dtype(at::kLong));
}

// The intervals of a rule over segments, as BlockMask's own constructors define them (so Python
// repeats none of their logic).
std::tuple<at::Tensor, at::Tensor> block_mask_op(const std::string& rule,
                                                 c10::IntArrayRef segments, int64_t band,
                                                 int64_t key_length) {
  return at_python_boundary([&] {
    TESSERA_CHECK(!segments.empty(),
                  "tessera.BlockMask: {} needs at least one segment length, got none", rule);
    const TokenLayout layout(segments.vec());
    const BlockMask mask = [&] {
      if (rule == "causal") return BlockMask::causal(layout);
      if (rule == "bidirectional") return BlockMask::bidirectional(layout);
      if (rule == "block_causal") return BlockMask::block_causal(layout);
      if (rule == "block_diagonal") return BlockMask::block_diagonal(layout);
      if (rule == "self_and_previous") return BlockMask::self_and_previous(layout);
      if (rule == "banded") return BlockMask::banded(layout, band);
      if (rule == "prefix_lm") return BlockMask::prefix_lm(layout);
      if (rule == "causal_tail") return BlockMask::causal_tail(layout.length(), key_length);
      TESSERA_FAIL(
          "tessera.BlockMask: unknown rule '{}'; expected causal, bidirectional, block_causal, "
          "block_diagonal, self_and_previous, banded, prefix_lm or causal_tail",
          rule);
    }();
    return std::make_tuple(to_tensor(mask.key_begin()), to_tensor(mask.key_end()));
  });
}

}  // namespace
}  // namespace tessera::python

TORCH_LIBRARY(tessera, m) {
  m.def(
      "attention_forward(Tensor q, Tensor k, Tensor v, Tensor key_begin, Tensor key_end, "
      "Tensor? allowed, int[] query_segments, int key_length, float? scale) -> (Tensor out, "
      "Tensor lse)");
  m.def(
      "attention_backward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor grad_out, "
      "Tensor key_begin, Tensor key_end, Tensor? allowed, int[] query_segments, int key_length, "
      "float? scale) -> "
      "(Tensor dq, Tensor dk, Tensor dv)");
  // No tensor arguments: a plain function (CompositeImplicitAutograd), callable on any device.
  m.def("block_mask(str rule, int[] segments, int band=0, int key_length=0) -> (Tensor key_begin, "
        "Tensor key_end)",
        &tessera::python::block_mask_op);
}

// One device-generic implementation: tessera::attention_forward picks the CPU or CUDA kernel (or
// the reference) from the tensors, as tessera::attention does.
TORCH_LIBRARY_IMPL(tessera, CPU, m) {
  m.impl("attention_forward", &tessera::python::attention_forward_op);
  m.impl("attention_backward", &tessera::python::attention_backward_op);
}

TORCH_LIBRARY_IMPL(tessera, CUDA, m) {
  m.impl("attention_forward", &tessera::python::attention_forward_op);
  m.impl("attention_backward", &tessera::python::attention_backward_op);
}
