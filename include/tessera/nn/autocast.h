#pragma once
// Mixed precision: a scope in which LibTorch's autocast runs matrix products in bfloat16 (on the
// CPU or a GPU) while reductions and normalisations stay in float32.
//
//   {
//     tessera::AutocastGuard bf16(at::kCPU);   // or at::kCUDA
//     auto out = backbone.forward(inputs, labels, mask);
//   }
//
// The backbone keeps its parameters in float32; under autocast its linear layers compute in
// bfloat16, and its attention runs in the dtype of the q/k/v projections (bfloat16), through
// tessera::attention's bfloat16 kernels.

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace tessera {

class AutocastGuard {
 public:
  /// Enables (or, with enabled = false, disables) autocast for `device_type` with `dtype`, and
  /// restores the previous state when destroyed.
  explicit AutocastGuard(c10::DeviceType device_type, c10::ScalarType dtype = c10::kBFloat16,
                         bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_type_;
  bool previous_enabled_;
  c10::ScalarType previous_dtype_;
};  ///< Scoped LibTorch autocast: on (or off) for a device type while it lives.

}  // namespace tessera
