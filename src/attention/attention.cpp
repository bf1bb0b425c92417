// tessera::attention: input checks, backend choice, and the autograd wiring around the kernels.

#include "tessera/attention/attention.h"
#include "tessera/attention/attention_passes.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <mutex>
#include <string>
#include <utility>

#include "attention/backends/backend.h"
#include "attention/reference.h"
#include "tessera/core/error.h"
#include "tessera/core/logging.h"

namespace tessera {

const char* to_string(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::automatic:
      return "automatic";
    case AttentionBackend::cpu:
      return "cpu";
    case AttentionBackend::cuda:
      return "cuda";
    case AttentionBackend::reference:
      return "reference";
  }
  return "unknown";
}

namespace {

// The CUDA kernels (kernels/cuda, their adapter in backends/cuda_backend.cpp) are compiled into
// builds with TESSERA_WITH_CUDA.
#ifdef TESSERA_WITH_CUDA
constexpr bool kCudaKernelBuilt = true;
#else
constexpr bool kCudaKernelBuilt = false;
#endif

// What the CUDA kernels take: bfloat16 or float16, head dim 64 or 128 (docs/cuda.md).
bool cuda_kernel_dtype(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }
bool cuda_kernel_head_dim(int64_t d) { return d == 64 || d == 128; }

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return c10::toString(t);
  }
}

std::string shape(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

// Note [Automatic backend]
// automatic picks, from q's device and dtype:
//   CPU, float32 / bfloat16   -> the tiled CPU kernel (which then requires a head dim in
//                                [kMinHeadDim, kMaxHeadDim]: an unsupported head dim is an error,
//                                not a silent fall back to the O(L^2)-memory dense path);
//   CPU, float64              -> the dense reference: the kernels are float32 / bfloat16 only, and
//                                float64 is a debugging and gradient-checking dtype, where exact
//                                dense math is what the caller wants;
//   CUDA, bfloat16 / float16, head dim 64 or 128
//                             -> the CUDA kernel when the build has it (TESSERA_WITH_CUDA);
//   CUDA, anything else       -> the dense reference on the GPU (O(L^2) memory; logged once at
//                                debug level): float32 CUDA tensors, other head dims, and every
//                                CUDA tensor in a build without the kernels;
//   any other device          -> the dense reference.
// Other dtypes (integers; float16 except for the CUDA kernel) then fail the chosen backend's
// checks with a message that names the dtypes it accepts.
AttentionBackend resolve_backend(const at::Tensor& q, AttentionBackend requested) {
  if (requested != AttentionBackend::automatic) return requested;
  if (q.is_cuda()) {
    const bool supported = cuda_kernel_dtype(q.scalar_type()) && q.dim() == 4 &&
                           cuda_kernel_head_dim(q.size(3));
    if (kCudaKernelBuilt && supported) return AttentionBackend::cuda;
    static std::once_flag logged;
    std::call_once(logged, [&] {
      TESSERA_LOG_DEBUG(
          "attention: CUDA tensors ({}, head dim {}) use the dense reference on the GPU: {}",
          dtype_name(q.scalar_type()), q.dim() == 4 ? q.size(3) : int64_t{-1},
          kCudaKernelBuilt ? "the CUDA kernel takes bfloat16 or float16 with head dim 64 or 128"
                           : "this build has no CUDA attention kernel");
    });
    return AttentionBackend::reference;
  }
  if (q.is_cpu() && q.scalar_type() != at::kDouble) return AttentionBackend::cpu;
  return AttentionBackend::reference;
}

void check_kernel_dtype_and_head_dim(const at::Tensor& q, AttentionBackend backend) {
  const at::ScalarType t = q.scalar_type();
  TESSERA_CHECK(t == at::kFloat || t == at::kBFloat16,
                "attention: the {} backend takes float32 or bfloat16 tensors, got {} (float64 runs "
                "on AttentionBackend::reference)",
                to_string(backend), dtype_name(t));
  const int64_t d = q.size(3);
  TESSERA_CHECK(d >= kMinHeadDim && d <= kMaxHeadDim,
                "attention: head dim {} is not supported by the {} kernel; expected {} <= D <= {} "
                "(AttentionBackend::reference takes any head dim)",
                d, to_string(backend), kMinHeadDim, kMaxHeadDim);
}

}  // namespace

void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const BlockMask& mask, AttentionBackend backend) {
  TESSERA_CHECK(q.defined() && k.defined() && v.defined(),
                "attention: q, k and v must be defined tensors (got q {}, k {}, v {})",
                q.defined() ? "defined" : "undefined", k.defined() ? "defined" : "undefined",
                v.defined() ? "defined" : "undefined");
  TESSERA_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                "attention: q, k and v must be 4-D [batch, heads, length, head_dim]; got q {}, "
                "k {}, v {}",
                shape(q), shape(k), shape(v));
  TESSERA_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
                    q.size(1) == v.size(1),
                "attention: q, k and v must have the same batch and head counts; got q {}, k {}, "
                "v {}",
                shape(q), shape(k), shape(v));
  TESSERA_CHECK(q.size(3) == k.size(3) && q.size(3) == v.size(3),
                "attention: q, k and v must have the same head dim; got q {}, k {}, v {}", shape(q),
                shape(k), shape(v));
  TESSERA_CHECK(k.size(2) == v.size(2),
                "attention: k and v must have the same length; got k {} and v {}", shape(k),
                shape(v));
  TESSERA_CHECK(q.size(0) >= 1 && q.size(1) >= 1 && q.size(3) >= 1,
                "attention: batch, heads and head dim must be >= 1; got q {}", shape(q));
  TESSERA_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                "attention: q, k and v must have the same dtype; got q {}, k {}, v {}",
                dtype_name(q.scalar_type()), dtype_name(k.scalar_type()),
                dtype_name(v.scalar_type()));
  TESSERA_CHECK(q.device() == k.device() && q.device() == v.device(),
                "attention: q, k and v must be on the same device; got q on {}, k on {}, v on {}",
                q.device().str(), k.device().str(), v.device().str());
  TESSERA_CHECK(mask.query_length() == q.size(2) && mask.key_length() == k.size(2),
                "attention: the mask is built for {} queries x {} keys, but q has {} queries and "
                "k has {} keys",
                mask.query_length(), mask.key_length(), q.size(2), k.size(2));

  const AttentionBackend resolved = resolve_backend(q, backend);
  switch (resolved) {
    case AttentionBackend::reference: {
      const at::ScalarType t = q.scalar_type();
      TESSERA_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kDouble,
                    "attention: the reference backend takes float32, bfloat16 or float64 tensors, "
                    "got {}",
                    dtype_name(t));
      break;
    }
    case AttentionBackend::cpu:
      TESSERA_CHECK(q.is_cpu(), "attention: the cpu backend needs CPU tensors, got tensors on {}",
                    q.device().str());
      check_kernel_dtype_and_head_dim(q, resolved);
      break;
    case AttentionBackend::cuda: {
      TESSERA_CHECK(kCudaKernelBuilt,
                    "attention: AttentionBackend::cuda was requested, but this build has no CUDA "
                    "attention kernel (built without CUDA); use automatic or reference");
      const at::ScalarType t = q.scalar_type();
      TESSERA_CHECK(cuda_kernel_dtype(t),
                    "attention: the cuda backend takes bfloat16 or float16 tensors, got {} "
                    "(float32 and float64 run on AttentionBackend::reference)",
                    dtype_name(t));
      TESSERA_CHECK(cuda_kernel_head_dim(q.size(3)),
                    "attention: head dim {} is not supported by the cuda kernel; expected D = 64 "
                    "or D = 128 (AttentionBackend::reference takes any head dim)",
                    q.size(3));
      TESSERA_CHECK(q.is_cuda(),
                    "attention: the cuda backend needs CUDA tensors, got tensors on {}",
                    q.device().str());
      break;
    }
    case AttentionBackend::automatic:
      TESSERA_FAIL("attention: internal: unresolved backend");
  }
}

namespace {

AttentionForward run_forward(AttentionBackend backend, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, const BlockMask& mask, double scale) {
  switch (backend) {
    case AttentionBackend::cpu:
      return cpu::attention_forward(q, k, v, mask, scale);
    case AttentionBackend::reference:
      return attention_reference(q, k, v, mask, scale);
#ifdef TESSERA_WITH_CUDA
    case AttentionBackend::cuda:
      return cuda::attention_forward(q, k, v, mask, scale);
#endif
    default:
      TESSERA_FAIL("attention: internal: no forward for backend {}", to_string(backend));
  }
}

AttentionGradients run_backward(AttentionBackend backend, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                const at::Tensor& grad_out, const BlockMask& mask, double scale) {
  switch (backend) {
    case AttentionBackend::cpu:
      return cpu::attention_backward(q, k, v, out, lse, grad_out, mask, scale);
    case AttentionBackend::reference:
      return detail::attention_reference_backward(q, k, v, grad_out, mask, scale);
#ifdef TESSERA_WITH_CUDA
    case AttentionBackend::cuda:
      return cuda::attention_backward(q, k, v, out, lse, grad_out, mask, scale);
#endif
    default:
      TESSERA_FAIL("attention: internal: no backward for backend {}", to_string(backend));
  }
}

// Note [The mask through autograd]
// backward() needs the BlockMask (and its cached tile plans), which is not a tensor. The autograd
// context only keeps tensors and IValues, so the forward copies the mask into a MaskHolder (a
// CustomClassHolder) and stores it as an IValue capsule in ctx->saved_data. The copy is O(L) (the
// interval vectors; a dense mask's tensor and the plan cache are shared, not copied), and it lives
// exactly as long as the graph node, so backward can never see a dangling mask even when the
// caller's BlockMask is gone. (Upstream discourages new IValue capsule call sites; should the API
// go away, registering MaskHolder with torch::class_ and storing it as a custom-class IValue is the
// drop-in replacement.)
struct MaskHolder final : torch::CustomClassHolder {
  explicit MaskHolder(BlockMask m) : mask(std::move(m)) {}
  BlockMask mask;
};

constexpr const char* kMaskKey = "tessera.mask";

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const BlockMask& mask,
                            double scale, AttentionBackend backend) {
    at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    AttentionForward result = run_forward(backend, qc, kc, vc, mask, scale);
    ctx->save_for_backward({qc, kc, vc, result.out, result.lse});
    ctx->saved_data[kMaskKey] = c10::IValue::make_capsule(c10::make_intrusive<MaskHolder>(mask));
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["backend"] = static_cast<int64_t>(backend);
    return result.out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const c10::intrusive_ptr<torch::CustomClassHolder> capsule =
        ctx->saved_data.at(kMaskKey).toCapsule();
    const auto* holder = dynamic_cast<const MaskHolder*>(capsule.get());
    TESSERA_CHECK(holder != nullptr, "attention: internal: the saved mask is missing");
    const double scale = ctx->saved_data.at("scale").toDouble();
    const auto backend = static_cast<AttentionBackend>(ctx->saved_data.at("backend").toInt());
    const at::Tensor& q = saved[0];
    const at::Tensor grad_out = grad_outputs[0].to(q.scalar_type()).contiguous();
    AttentionGradients g = run_backward(backend, q, saved[1], saved[2], saved[3], saved[4],
                                        grad_out, holder->mask, scale);
    // One entry per forward argument; the mask, scale and backend get none.
    return {std::move(g.dq), std::move(g.dk), std::move(g.dv),
            at::Tensor(),    at::Tensor(),    at::Tensor()};
  }
};

}  // namespace

namespace {

// options.scale, or 1/sqrt(D); q is already checked to be 4-D.
double softmax_scale(const at::Tensor& q, const AttentionOptions& options) {
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(3))));
  TESSERA_CHECK(std::isfinite(scale), "attention: the softmax scale must be finite, got {}", scale);
  return scale;
}

// A saved tensor handed back to attention_backward must have the shape the forward gave it.
void check_saved_shape(const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  TESSERA_CHECK(t.defined() && t.sizes() == expected,
                "attention_backward: {} must be {} (as the forward returned it), got {}", name,
                fmt::format("[{}]", fmt::join(expected, ", ")),
                t.defined() ? shape(t) : std::string("an undefined tensor"));
}

}  // namespace

AttentionForward attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const BlockMask& mask, const AttentionOptions& options) {
  check_attention_inputs(q, k, v, mask, options.backend);
  return run_forward(resolve_backend(q, options.backend), q, k, v, mask, softmax_scale(q, options));
}

AttentionGradients attention_backward(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out,
                                      const at::Tensor& lse, const at::Tensor& grad_out,
                                      const BlockMask& mask, const AttentionOptions& options) {
  check_attention_inputs(q, k, v, mask, options.backend);
  check_saved_shape("out", out, q.sizes());
  check_saved_shape("grad_out", grad_out, q.sizes());
  check_saved_shape("lse", lse, q.sizes().slice(0, 3));
  TESSERA_CHECK(out.device() == q.device() && lse.device() == q.device() &&
                    grad_out.device() == q.device(),
                "attention_backward: out, lse and grad_out must be on q's device ({}), got {}, {} "
                "and {}",
                q.device().str(), out.device().str(), lse.device().str(),
                grad_out.device().str());
  TESSERA_CHECK(lse.scalar_type() == at::kFloat,
                "attention_backward: lse must be float32 (as the forward returned it), got {}",
                dtype_name(lse.scalar_type()));
  const at::ScalarType t = q.scalar_type();
  return run_backward(resolve_backend(q, options.backend), q.contiguous(), k.contiguous(),
                      v.contiguous(), out.to(t).contiguous(), lse.contiguous(),
                      grad_out.to(t).contiguous(), mask, softmax_scale(q, options));
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const BlockMask& mask, const AttentionOptions& options) {
  check_attention_inputs(q, k, v, mask, options.backend);
  const AttentionBackend backend = resolve_backend(q, options.backend);
  const double scale = softmax_scale(q, options);
  const bool needs_grad =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (!needs_grad) {
    // Inference: nothing to save for a backward pass. Each backend takes the layouts it can: the
    // CPU kernel reads strided heads in place (Note [Strided heads] in
    // kernels/cpu/attention_kernels.h), which spares a KV-cache decoding step a copy of the whole
    // cache; the CUDA kernel makes its own contiguous copies; the reference is ATen math.
    return run_forward(backend, q, k, v, mask, scale).out;
  }
  return AttentionFunction::apply(q, k, v, mask, scale, backend);
}

}  // namespace tessera
