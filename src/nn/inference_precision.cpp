#include "tessera/nn/inference_precision.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>


#include "tessera/core/error.h"
#include "tessera/core/machine.h"

namespace tessera {

std::string_view to_string(InferencePrecision precision) {
  switch (precision) {
    case InferencePrecision::bf16:
      return "bf16";
    case InferencePrecision::int8:
      return "int8";
    case InferencePrecision::fp32:
      break;
  }
  return "fp32";
}

InferencePrecision parse_inference_precision(std::string_view text, c10::DeviceType device) {
  if (text == "fp32") return InferencePrecision::fp32;
  if (text == "bf16") return InferencePrecision::bf16;
  if (text == "int8") return InferencePrecision::int8;
  if (text == "auto") return best_inference_precision(device);
  TESSERA_FAIL("unknown precision '{}': expected fp32, bf16, int8 or auto", text);
}

bool cpu_has_bf16_hardware() { return cpu_has_any_flag({"avx512_bf16", "amx_bf16"}); }

InferencePrecision best_inference_precision(c10::DeviceType device) {
  if (device == c10::DeviceType::CUDA) return InferencePrecision::bf16;
  return cpu_has_bf16_hardware() ? InferencePrecision::bf16 : InferencePrecision::fp32;
}

c10::ScalarType matmul_dtype(InferencePrecision precision) {
  return precision == InferencePrecision::bf16 ? at::kBFloat16 : at::kFloat;
}

namespace {

// set_data keeps the tensor (and the module's reference to it) and swaps its storage and dtype,
// as torch.nn.Module.to(dtype) does.
bool convert_in_place(const at::Tensor& weight, c10::ScalarType dtype) {
  if (!weight.defined() || weight.scalar_type() == dtype) return false;
  at::Tensor target = weight;
  target.set_data(weight.to(dtype));
  return true;
}

}  // namespace

int64_t convert_convolution_weights(const std::vector<at::Tensor>& parameters,
                                    c10::ScalarType dtype) {
  at::NoGradGuard no_grad;
  int64_t converted = 0;
  for (const at::Tensor& p : parameters) {
    if (p.defined() && p.dim() == 4 && p.is_floating_point()) converted += convert_in_place(p, dtype);
  }
  return converted;
}

int64_t convert_matmul_weights(torch::nn::Module& module, c10::ScalarType dtype) {
  at::NoGradGuard no_grad;
  int64_t converted = 0;
  const auto convert = [&](const at::Tensor& weight) { converted += convert_in_place(weight, dtype); };
  for (const auto& child : module.modules(/*include_self=*/true)) {
    if (auto* linear = child->as<torch::nn::Linear>()) {
      convert(linear->weight);
    } else if (auto* conv = child->as<torch::nn::Conv2d>()) {
      convert(conv->weight);
    }
  }
  return converted;
}

}  // namespace tessera
