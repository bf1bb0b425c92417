#include "tessera/nn/int8_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/native/quantized/PackedParams.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/machine.h"

namespace tessera {

// Note [int8 linear layers]
// The weight is quantized once, symmetrically per output channel: s_c = max_k |w_ck| / 127 and
// qw_ck = round(w_ck / s_c) in [-127, 127]. The input is quantized at every call, one scale per
// row: LibTorch's dynamic quantization (quantized::linear_dynamic) takes one scale for the whole
// batch from its minimum and maximum, so a row's result would depend on the other rows of its
// batch, and Tessera promises that a sample does not depend on its batch. Each row is therefore
// divided by its own max |x_k| (a), which puts every row in [-1, 1], and FBGEMM's product with a
// fixed input scale 1/Q and zero point Q + 1 (quantized::linear_with_input_q_dq_qweight_dq_
// output_fp32) quantizes that to qx_k = round(x_k / a · Q) + Q + 1 in [1, 2Q + 1] — the
// unsigned 8-bit operand FBGEMM's kernels take — sums qx·qw exactly in int32, and returns
// (1/Q) · s_c · Σ_k (qx_k − Q − 1) · qw_ck in float32; multiplying by a and adding the bias gives
// the layer's output. Q is 127 on CPUs with VNNI (AVX512-VNNI or AVX-VNNI); without it FBGEMM's
// AVX2 kernel adds pairs of u8·s8 products in 16 bits, which 255 · 127 · 2 would overflow, so Q is
// 63 (the inputs are then at most 127, and 127 · 127 · 2 < 2^15): the same choice as LibTorch's
// `reduce_range` for x86, made per row. The quantization error is the rounding of both operands,
// |Δy_c| ≤ Σ_k (|x_k| s_c / 2 + |w_ck| a / (2Q) + s_c a / (4Q)), which the tests check
// against float64. A row holding NaN or infinity gives NaN, as float32 would.

namespace {

using PackedLinear = LinearPackedParamsBase;

PackedLinear& unwrap(const c10::intrusive_ptr<c10::intrusive_ptr_target>& packed) {
  return *static_cast<PackedLinear*>(packed.get());
}

// Packs for FBGEMM whatever quantized engine the process chose (oneDNN's packed weights lack the
// fixed-input-scale product), and leaves the process's choice as it was.
c10::intrusive_ptr<PackedLinear> prepack(const at::Tensor& quantized_weight) {
  struct EngineGuard {
    at::QEngine saved = at::globalContext().qEngine();
    EngineGuard() { at::globalContext().setQEngine(at::QEngine::FBGEMM); }
    ~EngineGuard() { at::globalContext().setQEngine(saved); }
  } engine;
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("quantized::linear_prepack", "")
          .typed<c10::intrusive_ptr<PackedLinear>(at::Tensor, std::optional<at::Tensor>)>();
  return op.call(quantized_weight, std::nullopt);
}

}  // namespace

bool int8_linear_available() {
  const auto& engines = at::globalContext().supportedQEngines();
  return std::find(engines.begin(), engines.end(), at::QEngine::FBGEMM) != engines.end();
}

Int8LinearWeight::Int8LinearWeight(const at::Tensor& weight) {
  TESSERA_CHECK(int8_linear_available(),
                "int8 linear layers need LibTorch's FBGEMM quantized CPU GEMM, which this LibTorch "
                "build lacks");
  TESSERA_CHECK(weight.dim() == 2 && weight.is_floating_point() && weight.device().is_cpu() &&
                    weight.size(0) >= 1 && weight.size(1) >= 1,
                "int8 linear: the weight must be a floating-point CPU matrix [out, in], got {} {} "
                "on {}",
                weight.scalar_type(), weight.sizes(), weight.device().str());
  at::NoGradGuard no_grad;
  out_features_ = weight.size(0);
  in_features_ = weight.size(1);
  input_levels_ = cpu_has_any_flag({"avx512_vnni", "avx_vnni"}) ? 127 : 63;
  const at::Tensor w = weight.detach().to(at::kFloat).contiguous();
  TESSERA_CHECK(at::isfinite(w).all().item<bool>(),
                "int8 linear: the weight [{}, {}] holds NaN or infinity", out_features_,
                in_features_);
  at::Tensor scales = w.abs().amax(1).to(at::kDouble).div_(127.0);
  scales.masked_fill_(scales.eq(0), 1.0);  // an all-zero channel quantizes to zeros at any scale
  const at::Tensor quantized = at::quantize_per_channel(
      w, scales, at::zeros({out_features_}, at::kLong), /*axis=*/0, at::kQInt8);
  packed_ = prepack(quantized);
}

at::Tensor Int8LinearWeight::forward(const at::Tensor& x, const at::Tensor& bias) const {
  TESSERA_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() >= 1 &&
                    x.size(-1) == in_features_,
                "int8 linear [{} -> {}]: the input must be float32 on the CPU [..., {}], got {} {} "
                "on {}",
                in_features_, out_features_, in_features_, x.scalar_type(), x.sizes(),
                x.device().str());
  TESSERA_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == out_features_),
                "int8 linear [{} -> {}]: the bias must be [{}], got {}", in_features_,
                out_features_, out_features_, bias.sizes());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_features_;
  if (x.numel() == 0) return at::zeros(out_shape, x.options());
  const at::Tensor rows = x.reshape({-1, in_features_});
  // abs().amax(): LibTorch's vectorised max over the contiguous row, 8 times faster here than
  // linalg_vector_norm(inf), whose reduction is scalar. NaN propagates through both.
  const at::Tensor peak = rows.abs().amax(1, /*keepdim=*/true);
  const at::Tensor finite = at::isfinite(peak);
  // An all-zero row divides by the smallest normal float instead of 0 and stays zero.
  const at::Tensor divisor = peak.clamp_min(std::numeric_limits<float>::min());
  at::Tensor y = unwrap(packed_).apply_with_input_q_dq_qweight_dq_output_fp32(
      rows / divisor, 1.0 / static_cast<double>(input_levels_), input_levels_ + 1);
  y = bias.defined() ? at::addcmul(bias.to(at::kFloat), y, divisor) : y.mul_(divisor);
  if (!finite.all().item<bool>()) {
    y.masked_fill_(finite.logical_not(), std::numeric_limits<float>::quiet_NaN());
  }
  return y.view(out_shape);
}

at::Tensor Int8LinearWeight::dequantized() const {
  const auto [quantized, bias] = unwrap(packed_).unpack();
  return quantized.dequantize();
}

const Int8LinearWeight* int8_weight_of(const torch::nn::LinearImpl& layer) {
  for (const auto& child : layer.children()) {
    if (const auto* int8 = dynamic_cast<const Int8LinearWeight*>(child.get())) return int8;
  }
  return nullptr;
}

namespace {

constexpr const char* kInt8Child = "int8";

// set_data keeps the Parameter (and every reference to it) and swaps what it holds.
void replace_data(const at::Tensor& parameter, const at::Tensor& data) {
  at::Tensor target = parameter;
  target.set_data(data);
}

}  // namespace

int64_t quantize_linear_weights(torch::nn::Module& module) {
  at::NoGradGuard no_grad;
  int64_t quantized = 0;
  for (const auto& child : module.modules(/*include_self=*/true)) {
    auto* linear = child->as<torch::nn::Linear>();
    if (linear == nullptr || int8_weight_of(*linear) != nullptr) continue;
    const at::Tensor& weight = linear->weight;
    auto int8 = std::make_shared<Int8LinearWeight>(weight);
    // The float values go; the shape stays for code that reads it (Invariant in the header).
    const at::Tensor placeholder =
        at::full({1}, std::numeric_limits<float>::quiet_NaN(), weight.options())
            .expand(weight.sizes());
    replace_data(weight, placeholder);
    linear->register_module(kInt8Child, int8);
    ++quantized;
  }
  return quantized;
}

int64_t dequantize_linear_weights(torch::nn::Module& module, c10::ScalarType dtype) {
  at::NoGradGuard no_grad;
  int64_t restored = 0;
  for (const auto& child : module.modules(/*include_self=*/true)) {
    auto* linear = child->as<torch::nn::Linear>();
    if (linear == nullptr) continue;
    const Int8LinearWeight* int8 = int8_weight_of(*linear);
    if (int8 == nullptr) continue;
    replace_data(linear->weight, int8->dequantized().to(dtype).contiguous());
    linear->unregister_module(kInt8Child);
    ++restored;
  }
  return restored;
}

}  // namespace tessera
