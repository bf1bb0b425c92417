#pragma once
// int8 linear layers for sampling on the CPU: the weight stored as int8 with one scale per output
// channel, each input row quantized to 8 bits with its own scale at every call, the product
// summed in int32 by FBGEMM (LibTorch's quantized CPU GEMM).
//
//   quantize_linear_weights(*backbone_module);         // every torch::nn::Linear under it
//   at::Tensor y = tessera::linear(x, *layer);         // tessera/nn/linear.h finds the int8 form
//
// What is computed, for a row x and output channel c (Note [int8 linear layers]):
//   y_c = a · s_c · Σ_k qx_k · qw_ck + b_c,   qw_ck = round(w_ck / s_c), s_c = max_k |w_ck| / 127,
//   a = max_k |x_k|,  qx_k = round(x_k / a · Q) / Q   (Q = 127 on CPUs with VNNI, 63 without).
// The sums are exact integers and every scale belongs to one row or one channel, so a row's
// result depends on nothing else in the batch and not on the thread count: int8 sampling keeps
// fp32's determinism promises (docs/determinism.md), with other values than fp32's.
//
// Invariant: a quantized Linear keeps its `weight` parameter's shape, but the float values are
// gone (the storage is a single NaN, broadcast: the int8 copy is the layer's only weight), so it
// must be called through tessera::linear; dequantize_linear_weights gives it float weights again
// (the int8-rounded ones).

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <cstdint>

namespace torch::nn {
class LinearImpl;
}

namespace tessera {

/// Whether LibTorch can run int8 layers here (its CPU build has FBGEMM, as the x86 wheels do).
bool int8_linear_available();

/// The int8 form of one Linear layer's weight: registered as the layer's child module "int8".
class Int8LinearWeight : public torch::nn::Module {
 public:
  /// Quantizes float `weight` [out, in] per output channel (symmetric, 127 levels a side).
  explicit Int8LinearWeight(const at::Tensor& weight);

  /// x·Wᵀ + bias for float32 CPU x [..., in] (bias float [out] or undefined).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias) const;

  /// The weight the products use, float32 [out, in]: qw_ck · s_c.
  at::Tensor dequantized() const;
  int64_t in_features() const { return in_features_; }    ///< the weight's columns
  int64_t out_features() const { return out_features_; }  ///< the weight's rows
  /// Levels a side of the input rows' quantization (Q above): 127 or 63.
  int64_t input_levels() const { return input_levels_; }

 private:
  c10::intrusive_ptr<c10::intrusive_ptr_target> packed_;  // FBGEMM's LinearPackedParamsBase
  int64_t in_features_ = 0, out_features_ = 0, input_levels_ = 63;
};

/// The int8 form of `layer`, or nullptr when it has none.
const Int8LinearWeight* int8_weight_of(const torch::nn::LinearImpl& layer);

/// Quantizes every torch::nn::Linear under `module` (itself included) that has no int8 form yet,
/// and drops its float weight (the Invariant above). Returns the layers quantized.
int64_t quantize_linear_weights(torch::nn::Module& module);
/// Gives every quantized Linear under `module` float weights again, the dequantized int8 values in
/// `dtype`, and drops the int8 form. Returns the layers restored.
int64_t dequantize_linear_weights(torch::nn::Module& module, c10::ScalarType dtype);

}  // namespace tessera
