// The ATen adapter of the CUDA attention kernels (kernels/cuda): checks, the schedule and mask
// copied to the device, outputs allocated through LibTorch's caching allocator, launch on the
// current stream. The kernels themselves (kernels/cuda/attention_kernels.h and the .cu files)
// know nothing of LibTorch. Built only with TESSERA_WITH_CUDA (CMakeLists.txt).

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "attention/backends/backend.h"
#include "cuda/attention_kernels.h"
#include "cuda/schedule.h"
#include "tessera/core/error.h"

namespace tessera::cuda {

namespace {

void check_cuda(cudaError_t err, const char* what) {
  TESSERA_CHECK(err == cudaSuccess, "attention (cuda): {} failed: {} ({})", what,
                cudaGetErrorName(err), cudaGetErrorString(err));
}

DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return DType::bfloat16;
    case at::kHalf:
      return DType::float16;
    default:
      TESSERA_FAIL("attention (cuda): the kernels take bfloat16 or float16, got {}",
                   c10::toString(t));
  }
}

// The kernels read 16-byte vectors: a tensor whose data does not start on a 16-byte boundary (a
// view at an odd offset) is copied.
at::Tensor aligned_contiguous(const at::Tensor& t, at::ScalarType dtype) {
  at::Tensor c = t.to(dtype).contiguous();
  if (reinterpret_cast<std::uintptr_t>(c.data_ptr()) % 16 != 0) c = c.clone();
  return c;
}

void check_common(const at::Tensor& q, const at::Tensor& k, const BlockMask& mask) {
  TESSERA_CHECK(q.is_cuda() && k.is_cuda(), "attention (cuda): tensors must be on a CUDA device");
  TESSERA_CHECK(q.dim() == 4 && k.dim() == 4, "attention (cuda): expected [B, H, L, D] tensors");
  TESSERA_CHECK(kernel_supports(q.scalar_type(), q.size(3)),
                "attention (cuda): the kernels take bfloat16 or float16 with head dim 64 or 128, "
                "got {} with head dim {}",
                c10::toString(q.scalar_type()), q.size(3));
  TESSERA_CHECK(mask.query_length() == q.size(2) && mask.key_length() == k.size(2),
                "attention (cuda): the mask is {}x{} but q has {} rows and k has {}",
                mask.query_length(), mask.key_length(), q.size(2), k.size(2));
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TESSERA_CHECK(q.size(2) <= kMax && k.size(2) <= kMax && q.size(0) * q.size(1) <= kMax,
                "attention (cuda): lengths and batch x heads must fit in 32 bits, got q [{}] k "
                "[{}]",
                fmt::join(q.sizes(), ", "), fmt::join(k.sizes(), ", "));
  int major = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                    static_cast<int>(q.device().index())),
             "cudaDeviceGetAttribute");
  TESSERA_CHECK(major >= 8,
                "attention (cuda): the kernels need compute capability 8.0 or newer (Ampere, "
                "Hopper), device {} has {}.x; use AttentionBackend::reference",
                q.device().str(), major);
}

// Note [Uploads without a sync]
// The work lists and row bounds go to the device at every call. From pageable host memory a copy
// waits for the stream (the host would stop at every attention call until the GPU has caught up),
// so they are written into pinned host memory and copied asynchronously on the current stream:
// LibTorch's pinned-memory allocator records the copy and keeps the host block until it is done.
at::Tensor pinned_int32(int64_t n) {
  return at::empty({n}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
}

// The mask's element rule on the device: row intervals (int32) and, for the dense rule, the
// boolean mask. `keep` holds the device tensors for as long as the kernels need them.
ElementRule upload_mask(const BlockMask& mask, const at::Device& device,
                     std::vector<at::Tensor>& keep) {
  const int64_t lq = mask.query_length();
  at::Tensor bounds = pinned_int32(2 * lq);
  int32_t* b = bounds.data_ptr<int32_t>();
  for (int64_t i = 0; i < lq; ++i) {
    b[i] = static_cast<int32_t>(mask.key_begin()[static_cast<size_t>(i)]);
    b[lq + i] = static_cast<int32_t>(mask.key_end()[static_cast<size_t>(i)]);
  }
  at::Tensor on_device = bounds.to(device, at::kInt, /*non_blocking=*/true);
  keep.push_back(on_device);
  ElementRule rule;
  rule.row_begin = on_device.data_ptr<int32_t>();
  rule.row_end = rule.row_begin + lq;
  if (mask.rule() == tessera::MaskRule::dense) {
    static_assert(sizeof(bool) == 1, "the kernels read the dense mask as bytes");
    at::Tensor dense =
        mask.dense_mask().contiguous().pin_memory().to(device, at::kBool, /*non_blocking=*/true);
    keep.push_back(dense);
    rule.dense = reinterpret_cast<const uint8_t*>(dense.data_ptr<bool>());
  }
  return rule;
}

// Two int32 lists copied to the device in one transfer; returns the device copies' pointers.
struct DeviceLists {
  const int32_t* first = nullptr;
  const int32_t* second = nullptr;
};
DeviceLists upload_lists(const std::vector<int32_t>& first, const std::vector<int32_t>& second,
                         const at::Device& device, std::vector<at::Tensor>& keep) {
  const auto n1 = static_cast<int64_t>(first.size()), n2 = static_cast<int64_t>(second.size());
  at::Tensor host = pinned_int32(n1 + n2 + 1);
  int32_t* h = host.data_ptr<int32_t>();
  if (n1 > 0) std::memcpy(h, first.data(), static_cast<size_t>(n1) * sizeof(int32_t));
  if (n2 > 0) std::memcpy(h + n1, second.data(), static_cast<size_t>(n2) * sizeof(int32_t));
  h[n1 + n2] = 0;
  at::Tensor on_device = host.to(device, at::kInt, /*non_blocking=*/true);
  keep.push_back(on_device);
  const int32_t* d = on_device.data_ptr<int32_t>();
  return {d, d + n1};
}

}  // namespace

bool kernel_supports(at::ScalarType dtype, int64_t head_dim) {
  return (dtype == at::kBFloat16 || dtype == at::kHalf) && supported_head_dim(head_dim);
}

AttentionForward attention_forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                   const at::Tensor& v_in, const BlockMask& mask, double scale) {
  check_common(q_in, k_in, mask);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::ScalarType dtype = q_in.scalar_type();
  const at::Tensor q = aligned_contiguous(q_in, dtype), k = aligned_contiguous(k_in, dtype);
  const at::Tensor v = aligned_contiguous(v_in, dtype);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({B, H, Lq}, q.options().dtype(at::kFloat));
  if (Lq == 0) return {out, lse};
  if (Lk == 0) {  // no key at all: every row sees nothing
    out.zero_();
    lse.fill_(-std::numeric_limits<float>::infinity());
    return {out, lse};
  }

  const ForwardSchedule schedule = make_forward_schedule(mask.plan(kTileRows).tiles, kTileKeys);
  TESSERA_CHECK(schedule.num_tiles() <= 65535,
                "attention (cuda): {} query tiles exceed the grid's 65535; the query length {} is "
                "too long for this kernel",
                schedule.num_tiles(), Lq);
  std::vector<at::Tensor> keep;
  const DeviceLists lists = upload_lists(schedule.tiles, schedule.chunks, q.device(), keep);

  ForwardParams p;
  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.out = out.mutable_data_ptr();
  p.lse = lse.mutable_data_ptr<float>();
  p.batch_heads = B * H;
  p.lq = static_cast<int32_t>(Lq);
  p.lk = static_cast<int32_t>(Lk);
  p.head_dim = static_cast<int32_t>(D);
  p.scale = static_cast<float>(scale);
  p.tiles = lists.first;
  p.num_tiles = schedule.num_tiles();
  p.chunks = lists.second;
  p.mask = upload_mask(mask, q.device(), keep);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  check_cuda(launch_attention_forward(p, kernel_dtype(dtype), stream), "the forward kernel launch");
  // `keep` dies here while the kernel may still run: its device memory returns to LibTorch's
  // caching allocator, which hands it out again only to work ordered after this on the same
  // stream (the allocator's stream semantics), so the kernel reads valid data.
  return {out, lse};
}

AttentionGradients attention_backward(const at::Tensor& q_in, const at::Tensor& k_in,
                                      const at::Tensor& v_in, const at::Tensor& out_in,
                                      const at::Tensor& lse_in, const at::Tensor& grad_in,
                                      const BlockMask& mask, double scale) {
  check_common(q_in, k_in, mask);
  TESSERA_CHECK(out_in.sizes() == q_in.sizes() && grad_in.sizes() == q_in.sizes(),
                "attention (cuda): out and grad_out must have q's shape");
  TESSERA_CHECK(lse_in.numel() == q_in.size(0) * q_in.size(1) * q_in.size(2),
                "attention (cuda): expected lse of shape [B, H, Lq]");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::ScalarType dtype = q_in.scalar_type();
  const at::Tensor q = aligned_contiguous(q_in, dtype), k = aligned_contiguous(k_in, dtype);
  const at::Tensor v = aligned_contiguous(v_in, dtype);
  const at::Tensor out = aligned_contiguous(out_in, dtype);
  const at::Tensor grad_out = aligned_contiguous(grad_in, dtype);
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  if (Lq == 0 || Lk == 0) {
    return {at::zeros_like(q), at::zeros_like(k), at::zeros_like(v)};
  }
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor delta = at::empty({B * H * Lq}, q.options().dtype(at::kFloat));
  at::Tensor dq_accum = at::empty({B * H * Lq * D}, q.options().dtype(at::kFloat));

  const BackwardSchedule schedule =
      make_backward_schedule(mask.plan(kTileRows).tiles, Lk, kTileKeys);
  TESSERA_CHECK(schedule.num_key_blocks() <= 65535,
                "attention (cuda): {} key blocks exceed the grid's 65535; the key length {} is "
                "too long for this kernel",
                schedule.num_key_blocks(), Lk);
  std::vector<at::Tensor> keep;
  const DeviceLists lists =
      upload_lists(schedule.key_blocks, schedule.entries, q.device(), keep);

  BackwardParams p;
  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.out = out.const_data_ptr();
  p.grad_out = grad_out.const_data_ptr();
  p.lse = lse.const_data_ptr<float>();
  p.delta = delta.mutable_data_ptr<float>();
  p.dq_accum = dq_accum.mutable_data_ptr<float>();
  p.dq = dq.mutable_data_ptr();
  p.dk = dk.mutable_data_ptr();
  p.dv = dv.mutable_data_ptr();
  p.batch_heads = B * H;
  p.lq = static_cast<int32_t>(Lq);
  p.lk = static_cast<int32_t>(Lk);
  p.head_dim = static_cast<int32_t>(D);
  p.scale = static_cast<float>(scale);
  p.key_blocks = lists.first;
  p.num_key_blocks = schedule.num_key_blocks();
  p.entries = lists.second;
  p.mask = upload_mask(mask, q.device(), keep);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  check_cuda(launch_attention_backward(p, kernel_dtype(dtype), stream),
             "the backward kernel launch");
  return {dq, dk, dv};
}

}  // namespace tessera::cuda
