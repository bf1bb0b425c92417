#pragma once
// The precision a generator samples in, and what the machine offers.
//
//   generator.set_precision(best_inference_precision(at::kCPU));   // bf16 where the CPU has it
//   at::Tensor images = generator.sample(labels, {.seed = 0});
//
// bf16: the weights of every matrix product (Linear layers of the backbone and heads, the
// tokenizer's convolutions) are stored in bfloat16, and sampling runs under LibTorch's autocast
// (tessera/nn/autocast.h), so those products run in bfloat16 on the hardware's bf16 instructions
// (AVX512-BF16 or AMX on the CPU, tensor cores on a GPU) while norms, softmax, the residual stream,
// the token draw and the attention kernels' accumulators stay in float32. The KV cache holds
// bfloat16 (Backbone::make_kv_cache). Converting rounds the weights; it is not undone by going back
// to fp32 (reload the file for exact fp32 weights).
//
// int8: every Linear layer of the backbone and heads is quantized (tessera/nn/int8_linear.h: int8
// weights with a scale per output channel, each input row quantized to 8 bits per call, int32
// sums); the tokenizer, norms, attention and the token draw stay float32. For CPUs without bf16
// hardware, where it is the faster product, and for memory (a quarter of the float32 weights).
//
// Invariant: modules whose weights were converted to bf16 are called under autocast of that dtype
// (the Generator does this for sample(), sample_tokens() and decode()); called directly without
// it, a Linear with bf16 weights fails with LibTorch's dtype-mismatch error.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>
#include <string_view>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tessera {

/// The precision a Generator samples in.
enum class InferencePrecision {
  fp32,  ///< float32 throughout (exact parity with the references)
  bf16,  ///< bfloat16 matrix products, float32 accumulation and norms
  int8,  ///< int8 linear layers (CPU), everything else float32
};

std::string_view to_string(InferencePrecision precision);  ///< "fp32" / "bf16" / "int8"
/// "fp32" / "bf16" / "int8"; "auto" gives best_inference_precision(device). Throws tessera::Error
/// naming the accepted values otherwise.
InferencePrecision parse_inference_precision(std::string_view text, c10::DeviceType device);

/// Whether this CPU multiplies bfloat16 in hardware: AVX512-BF16 or AMX-BF16 (/proc/cpuinfo).
/// Without them LibTorch emulates bf16 products, slower than float32.
bool cpu_has_bf16_hardware();
/// bf16 on a CUDA device and on a CPU with bf16 hardware; fp32 otherwise (int8 changes samples
/// more than bf16 does, so it is only ever chosen by name).
InferencePrecision best_inference_precision(c10::DeviceType device);

/// The dtype of the floating-point matrix products for `precision`: kBFloat16 for bf16, kFloat
/// otherwise (int8 layers take and return float32).
c10::ScalarType matmul_dtype(InferencePrecision precision);

/// Stores the weights of every torch::nn::Linear and Conv2d under `module` (itself included) in
/// `dtype`, in place; biases, norms and embeddings keep theirs. Returns the tensors converted.
int64_t convert_matmul_weights(torch::nn::Module& module, c10::ScalarType dtype);
/// Stores every 4-D floating-point tensor of `parameters` (convolution weights; a tokenizer's
/// parameters()) in `dtype`, in place (the tensors share their storage with the module's).
/// Returns the tensors converted.
int64_t convert_convolution_weights(const std::vector<at::Tensor>& parameters,
                                    c10::ScalarType dtype);

}  // namespace tessera
