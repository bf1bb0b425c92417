// tessera::attention's input checks: each mistake is a tessera::Error that says what is wrong.

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <limits>

#include "attention/attention_test_util.h"
#include "tessera/attention/attention.h"
#include "tessera/core/error.h"

namespace tessera {
namespace {

at::Tensor t4(int64_t b, int64_t h, int64_t l, int64_t d, at::ScalarType dtype = at::kFloat) {
  return at::zeros({b, h, l, d}, dtype);
}

AttentionOptions backend(AttentionBackend b) {
  AttentionOptions o;
  o.backend = b;
  return o;
}

TEST(AttentionErrors, NotFourDimensional) {
  const BlockMask mask = BlockMask::causal(8);
  EXPECT_TESSERA_ERROR(attention(at::zeros({8, 32}), t4(1, 1, 8, 32), t4(1, 1, 8, 32), mask),
                       "must be 4-D [batch, heads, length, head_dim]; got q [8, 32]");
  EXPECT_TESSERA_ERROR(attention(at::Tensor(), t4(1, 1, 8, 32), t4(1, 1, 8, 32), mask),
                       "got q undefined");
}

TEST(AttentionErrors, MismatchedShapes) {
  const BlockMask mask = BlockMask::causal(8);
  EXPECT_TESSERA_ERROR(attention(t4(2, 1, 8, 32), t4(1, 1, 8, 32), t4(1, 1, 8, 32), mask),
                       "same batch and head counts; got q [2, 1, 8, 32], k [1, 1, 8, 32]");
  EXPECT_TESSERA_ERROR(attention(t4(1, 2, 8, 32), t4(1, 2, 8, 32), t4(1, 3, 8, 32), mask),
                       "same batch and head counts");
  EXPECT_TESSERA_ERROR(attention(t4(1, 1, 8, 32), t4(1, 1, 8, 64), t4(1, 1, 8, 32), mask),
                       "same head dim; got q [1, 1, 8, 32], k [1, 1, 8, 64]");
  EXPECT_TESSERA_ERROR(
      attention(t4(1, 1, 8, 32), t4(1, 1, 8, 32), t4(1, 1, 9, 32), mask),
      "k and v must have the same length; got k [1, 1, 8, 32] and v [1, 1, 9, 32]");
  EXPECT_TESSERA_ERROR(attention(t4(0, 1, 8, 32), t4(0, 1, 8, 32), t4(0, 1, 8, 32), mask),
                       "batch, heads and head dim must be >= 1");
}

TEST(AttentionErrors, MismatchedDtypes) {
  const BlockMask mask = BlockMask::causal(8);
  EXPECT_TESSERA_ERROR(
      attention(t4(1, 1, 8, 32), t4(1, 1, 8, 32, at::kDouble), t4(1, 1, 8, 32), mask),
      "same dtype; got q float32, k float64, v float32");
  EXPECT_TESSERA_ERROR(
      attention(t4(1, 1, 8, 32, at::kBFloat16), t4(1, 1, 8, 32), t4(1, 1, 8, 32), mask),
      "got q bfloat16, k float32");
}

TEST(AttentionErrors, UnsupportedDtypes) {
  const BlockMask mask = BlockMask::causal(8);
  const at::Tensor h = t4(1, 1, 8, 32, at::kHalf);
  EXPECT_TESSERA_ERROR(attention(h, h, h, mask),
                       "the cpu backend takes float32 or bfloat16 tensors, got float16");
  const at::Tensor f64 = t4(1, 1, 8, 32, at::kDouble);
  EXPECT_TESSERA_ERROR(attention(f64, f64, f64, mask, backend(AttentionBackend::cpu)),
                       "got float64 (float64 runs on AttentionBackend::reference)");
  const at::Tensor i = t4(1, 1, 8, 32, at::kInt);
  EXPECT_TESSERA_ERROR(attention(i, i, i, mask, backend(AttentionBackend::reference)),
                       "the reference backend takes float32, bfloat16 or float64 tensors, got Int");
  EXPECT_TESSERA_ERROR(attention_reference(h, h, h, mask, 1.0), "got float16");
}

TEST(AttentionErrors, MismatchedDevices) {
  const BlockMask mask = BlockMask::causal(8);
  const at::Tensor meta = at::empty({1, 1, 8, 32}, at::TensorOptions().device(at::kMeta));
  EXPECT_TESSERA_ERROR(attention(t4(1, 1, 8, 32), meta, t4(1, 1, 8, 32), mask),
                       "same device; got q on cpu, k on meta, v on cpu");
  EXPECT_TESSERA_ERROR(attention(meta, meta, meta, mask, backend(AttentionBackend::cpu)),
                       "the cpu backend needs CPU tensors, got tensors on meta");
}

TEST(AttentionErrors, MaskBuiltForAnotherLength) {
  const BlockMask mask = BlockMask::causal(64);
  EXPECT_TESSERA_ERROR(attention(t4(1, 1, 65, 32), t4(1, 1, 65, 32), t4(1, 1, 65, 32), mask),
                       "the mask is built for 64 queries x 64 keys, but q has 65 queries and k has "
                       "65 keys");
  const BlockMask tail = BlockMask::causal_tail(4, 64);
  EXPECT_TESSERA_ERROR(attention(t4(1, 1, 4, 32), t4(1, 1, 63, 32), t4(1, 1, 63, 32), tail),
                       "built for 4 queries x 64 keys, but q has 4 queries and k has 63 keys");
  EXPECT_TESSERA_ERROR(
      attention_reference(t4(1, 1, 8, 32), t4(1, 1, 8, 32), t4(1, 1, 8, 32), mask, 1.0),
      "built for 64 queries x 64 keys");
}

TEST(AttentionErrors, UnsupportedHeadDim) {
  const BlockMask mask = BlockMask::causal(8);
  for (int64_t d : {16, 512}) {
    SCOPED_TRACE(d);
    const at::Tensor x = t4(1, 1, 8, d);
    const std::string msg = fmt::format(
        "head dim {} is not supported by the cpu kernel; expected "
        "{} <= D <= {}",
        d, kMinHeadDim, kMaxHeadDim);
    EXPECT_TESSERA_ERROR(attention(x, x, x, mask), msg);
    EXPECT_TESSERA_ERROR(attention(x, x, x, mask, backend(AttentionBackend::cpu)), msg);
    EXPECT_TESSERA_ERROR(check_attention_inputs(x, x, x, mask, AttentionBackend::cpu), msg);
    // The reference takes any head dim.
    EXPECT_NO_THROW(attention(x, x, x, mask, backend(AttentionBackend::reference)));
  }
  const at::Tensor one = t4(1, 1, 8, 1);
  EXPECT_NO_THROW(check_attention_inputs(one, one, one, mask, AttentionBackend::reference));
}

TEST(AttentionErrors, CudaBackendWithoutACudaKernel) {
  const BlockMask mask = BlockMask::causal(8);
  const at::Tensor x = t4(1, 1, 8, 64, at::kBFloat16);
#ifdef TESSERA_WITH_CUDA
  // The kernel is built: CPU tensors are what it cannot take (tests/cuda checks the rest).
  EXPECT_TESSERA_ERROR(attention(x, x, x, mask, backend(AttentionBackend::cuda)),
                       "the cuda backend needs CUDA tensors, got tensors on cpu");
#else
  EXPECT_TESSERA_ERROR(attention(x, x, x, mask, backend(AttentionBackend::cuda)),
                       "AttentionBackend::cuda was requested, but this build has no CUDA "
                       "attention kernel");
#endif
}

TEST(AttentionErrors, NonFiniteScale) {
  const BlockMask mask = BlockMask::causal(8);
  const at::Tensor x = t4(1, 1, 8, 32);
  AttentionOptions o;
  o.scale = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TESSERA_ERROR(attention(x, x, x, mask, o), "the softmax scale must be finite, got nan");
}

TEST(AttentionErrors, BackendNames) {
  EXPECT_STREQ(to_string(AttentionBackend::automatic), "automatic");
  EXPECT_STREQ(to_string(AttentionBackend::cpu), "cpu");
  EXPECT_STREQ(to_string(AttentionBackend::cuda), "cuda");
  EXPECT_STREQ(to_string(AttentionBackend::reference), "reference");
}

}  // namespace
}  // namespace tessera
