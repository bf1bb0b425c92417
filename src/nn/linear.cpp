#include "tessera/nn/linear.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/machine.h"
#include "tessera/nn/int8_linear.h"

namespace tessera {

// Note [Linear layers through oneDNN]
// oneDNN's inner product replaces MKL's sgemm for a float32 CPU linear layer when
//   - the CPU is an AMD one (vendor_id AuthenticAMD): MKL's sgemm takes its generic path there;
//     on Intel CPUs MKL's tuned kernels are kept (not measured against oneDNN here);
//   - the weight has at least 2^20 elements (1024 x 1024): small layers, among them all of the
//     shipped Fashion-MNIST models', keep MKL and so their recorded samples' bits;
//   - on a CPU with AVX-512, the row count is not in [16, 64) with fewer than 4096 input
//     features, where oneDNN's AVX-512 kernel for narrow inputs measured slower than MKL's; on an
//     AVX2-only CPU oneDNN measured faster there too (docs/performance.md, "Linear layers").
// The rule reads only the vendor, the CPU's flags and the shape, never a timing, so it is
// deterministic: a machine always takes the same path.

namespace {

bool cpu_is_amd() {
  static const bool amd = [] {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
      if (line.rfind("vendor_id", 0) == 0) return line.find("AuthenticAMD") != std::string::npos;
    }
    return false;
  }();
  return amd;
}

enum class Forced { automatic, aten, onednn };

Forced forced_backend() {
  static const Forced forced = [] {
    const char* value = std::getenv("TESSERA_LINEAR_BACKEND");
    const std::string text = value == nullptr ? "" : value;
    if (text.empty() || text == "auto") return Forced::automatic;
    if (text == "aten") return Forced::aten;
    if (text == "onednn") return Forced::onednn;
    TESSERA_FAIL("TESSERA_LINEAR_BACKEND is '{}': expected aten, onednn or auto", text);
  }();
  return forced;
}

at::Tensor onednn_linear(const at::Tensor& x2d, const at::Tensor& weight, const at::Tensor& bias) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(x2d);
  stack.emplace_back(weight);
  stack.emplace_back(bias.defined() ? c10::IValue(bias) : c10::IValue());
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<std::optional<c10::Scalar>>());
  stack.emplace_back(c10::IValue());
  op.callBoxed(&stack);
  return stack.front().toTensor();
}

}  // namespace

std::string_view to_string(LinearBackend backend) {
  return backend == LinearBackend::onednn ? "onednn" : "aten";
}

LinearBackend cpu_linear_backend(int64_t rows, int64_t in_features, int64_t out_features) {
  switch (forced_backend()) {
    case Forced::aten:
      return LinearBackend::aten;
    case Forced::onednn:
      return at::hasMKLDNN() ? LinearBackend::onednn : LinearBackend::aten;
    case Forced::automatic:
      break;
  }
  if (!at::hasMKLDNN() || !cpu_is_amd()) return LinearBackend::aten;
  if (in_features * out_features < (int64_t{1} << 20)) return LinearBackend::aten;
  static const bool avx512 = cpu_has_any_flag({"avx512f"});
  if (avx512 && rows >= 16 && rows < 64 && in_features < 4096) return LinearBackend::aten;
  return LinearBackend::onednn;
}

namespace {

at::Tensor onednn_linear_any_rank(const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& bias) {
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  const int64_t rows = x.numel() / std::max<int64_t>(1, in_features);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_features;
  return onednn_linear(x.reshape({rows, in_features}).contiguous(), weight.contiguous(), bias)
      .view(out_shape);
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  LinearBackend backend) {
  if (backend == LinearBackend::aten) return at::linear(x, weight, bias);
  TESSERA_CHECK(at::hasMKLDNN(), "linear: this LibTorch was built without oneDNN");
  TESSERA_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                    weight.scalar_type() == at::kFloat && weight.dim() == 2 &&
                    x.size(-1) == weight.size(1),
                "linear: the onednn backend takes float32 CPU inputs [..., {}] and a 2-D weight, "
                "got {} {} and {} {}",
                weight.size(-1), x.scalar_type(), x.sizes(), weight.scalar_type(), weight.sizes());
  TESSERA_CHECK(!at::GradMode::is_enabled() || (!x.requires_grad() && !weight.requires_grad()),
                "linear: the onednn backend has no backward; call it without autograd");
  return onednn_linear_any_rank(x, weight, bias);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const bool eligible =
      x.device().is_cpu() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
      (!bias.defined() || bias.scalar_type() == at::kFloat) && x.dim() >= 1 &&
      !at::autocast::is_autocast_enabled(at::kCPU) &&
      !(at::GradMode::is_enabled() &&
        (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad())));
  if (!eligible) return at::linear(x, weight, bias);
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  const int64_t rows = x.numel() / std::max<int64_t>(1, in_features);
  if (x.size(-1) != in_features || rows == 0 ||
      cpu_linear_backend(rows, in_features, out_features) == LinearBackend::aten) {
    return at::linear(x, weight, bias);
  }
  return onednn_linear_any_rank(x, weight, bias);
}

at::Tensor linear(const at::Tensor& x, const torch::nn::LinearImpl& layer, const at::Tensor& bias) {
  if (const Int8LinearWeight* int8 = int8_weight_of(layer)) return int8->forward(x, bias);
  return linear(x, layer.weight, bias);
}

at::Tensor linear(const at::Tensor& x, const torch::nn::LinearImpl& layer) {
  return linear(x, layer, layer.bias);
}

}  // namespace tessera
