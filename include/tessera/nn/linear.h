#pragma once
// y = x·Wᵀ + b for the backbone's and heads' linear layers, through the faster of LibTorch's two
// float32 CPU GEMMs for the shape, when sampling.
//
//   at::Tensor y = tessera::linear(x, layer->weight, layer->bias);   // as at::linear
//
// LibTorch's at::linear runs float32 CPU products on MKL's sgemm. On AMD CPUs MKL takes its
// generic path, and oneDNN's inner product (the kernel LibTorch's own mkldnn::_linear_pointwise
// op runs) measured 1.2 to 5 times MKL's rate for most shapes of VAR's sampling, and slower for a
// few (docs/performance.md, "Linear layers"). Note [Linear layers through oneDNN] in
// src/nn/linear.cpp says when it is used; otherwise, and whenever autograd records (training),
// this is at::linear. Both compute the same sums in float32 in a different order, so results
// agree to rounding (the tests bound it), and the choice depends only on the CPU's vendor and the
// shape: the same machine always takes the same path. A layer quantized to int8
// (tessera/nn/int8_linear.h) runs its int8 product instead, through the overloads taking the layer.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string_view>

namespace torch::nn {
class LinearImpl;
}

namespace tessera {

/// Which GEMM a float32 CPU linear layer runs on.
enum class LinearBackend {
  aten,    ///< at::linear (MKL's sgemm for float32 on the CPU)
  onednn,  ///< LibTorch's mkldnn::_linear_pointwise (oneDNN's inner product)
};
std::string_view to_string(LinearBackend backend);  ///< "aten" / "onednn"

/// What tessera::linear runs for `rows` rows of `in_features` into `out_features`, float32 on the
/// CPU without autograd. TESSERA_LINEAR_BACKEND=aten|onednn forces one (read once); unset or
/// "auto", Note [Linear layers through oneDNN] decides.
LinearBackend cpu_linear_backend(int64_t rows, int64_t in_features, int64_t out_features);

/// at::linear(x, weight, bias) (bias may be undefined), dispatched as the file's top comment says.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
/// The same on a chosen backend (float32 CPU tensors without autograd for onednn; throws
/// tessera::Error otherwise, or where LibTorch was built without oneDNN).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  LinearBackend backend);

/// A torch::nn::Linear layer on x: its int8 form where quantize_linear_weights gave it one,
/// otherwise linear(x, layer.weight, layer.bias) as above. Call every Linear of a model that may
/// be quantized through these.
at::Tensor linear(const at::Tensor& x, const torch::nn::LinearImpl& layer);
/// The same with `bias` in place of the layer's own (undefined: none), e.g. a bias assembled
/// from parts.
at::Tensor linear(const at::Tensor& x, const torch::nn::LinearImpl& layer, const at::Tensor& bias);

}  // namespace tessera
