// Every attention backend against float64 attention, one case per backend x mask kind x dtype x
// shape: the backend's forward (output and log-sum-exp) and backward (dq, dk, dv from its own
// forward's out and lse) through its ATen adapter (src/attention/backends/backend.h), and
// tessera::attention dispatching to it. A backend is covered by adding it to backends() below,
// with the dtypes and head dims it takes; the mask kinds and shapes are the same for all.
// Mask kinds: every BlockMask rule over ragged segments (attention_test_util.h), fewer queries than
// keys (a decoding step, one scale's rows of block-causal), more keys than queries under user
// intervals and a dense mask, and a mask under which no row sees a key. Shapes: lengths 1, 7, 37,
// 65, 130, 200 and 680 (VAR's pyramid; one head, so the CPU backward splits the keys), batch and
// heads up to 3, head dims 32 to 256. The CPU kernel also runs with small tile sizes (every tile,
// chunk and row-group boundary case); the CUDA kernel runs on a GPU (skipped without one).

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../../src/attention/backends/backend.h"
#include "attention/attention_test_util.h"
#include "common/dense_attention.h"
#include "common/prerequisite.h"
#include "common/source_paths.h"
#include "tessera/attention/attention.h"
#include "tessera/attention/block_mask.h"

namespace tessera {
namespace {

using Check =
    std::function<::testing::AssertionResult(const at::Tensor& got, const at::Tensor& want)>;

// |got - want| <= atol + rtol |want| elementwise (-inf == -inf), no NaN.
Check elementwise(double atol, double rtol) {
  return [=](const at::Tensor& got, const at::Tensor& want) {
    return testing::all_close(got, want, atol, rtol);
  };
}

// ||got - want|| <= tol ||want|| (Frobenius), every element of `got` finite.
Check normwise(double tol) {
  return [=](const at::Tensor& got_in, const at::Tensor& want) -> ::testing::AssertionResult {
    const at::Tensor got = got_in.to(at::kDouble).cpu();
    if (got.sizes() != want.sizes()) {
      return ::testing::AssertionFailure() << "shape " << got.sizes() << " != " << want.sizes();
    }
    if (!got.isfinite().all().item<bool>()) {
      return ::testing::AssertionFailure() << "non-finite elements (NaN: unwritten or 0/0)";
    }
    const double err = (got - want).norm().item<double>();
    const double ref = std::max(want.norm().item<double>(), 1e-12);
    if (err > tol * ref) {
      return ::testing::AssertionFailure()
             << "||got - want|| / ||want|| = " << err / ref << " > " << tol;
    }
    return ::testing::AssertionSuccess();
  };
}

struct Tolerances {
  Check out, lse, grad;
};

// One backend under test: its adapter's passes, what it takes, how close it must come.
struct Backend {
  std::string name;
  /// What tessera::attention must run these through (its forward's bits), or none for a
  /// configuration attention() does not choose (the CPU kernel with other tile sizes).
  std::optional<AttentionBackend> dispatch;
  at::DeviceType device = at::kCPU;
  std::vector<at::ScalarType> dtypes;
  std::function<bool(int64_t)> head_dim_ok;
  int64_t max_length = 1 << 30;  // longer cases are left out (slow configurations)
  std::function<AttentionForward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const BlockMask&, double)>
      forward;
  std::function<AttentionGradients(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const BlockMask&, double)>
      backward;
  std::function<Tolerances(at::ScalarType)> tolerances;
};

Tolerances cpu_tolerances(at::ScalarType dtype) {
  // float32 accumulation either way; bfloat16 inputs and outputs round to 2^-9 relative. lse is
  // float32 whatever the inputs' dtype (the reference sees the same rounded inputs).
  if (dtype == at::kBFloat16) {
    return {elementwise(1e-2, 1e-2), elementwise(1e-5, 1e-5), elementwise(2e-2, 2e-2)};
  }
  return {elementwise(5e-6, 5e-5), elementwise(1e-5, 1e-5), elementwise(2e-5, 2e-4)};
}

Backend cpu_backend(std::string name, std::optional<AttentionBackend> dispatch,
                    std::vector<at::ScalarType> dtypes, cpu::TileSizes forward_tiles,
                    cpu::TileSizes backward_tiles, int64_t max_length = 1 << 30) {
  Backend b;
  b.name = std::move(name);
  b.dispatch = dispatch;
  b.dtypes = std::move(dtypes);
  b.head_dim_ok = [](int64_t d) { return d >= kMinHeadDim && d <= kMaxHeadDim; };
  b.max_length = max_length;
  b.forward = [=](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const BlockMask& m,
                  double s) { return cpu::attention_forward(q, k, v, m, s, forward_tiles); };
  b.backward = [=](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& o, const at::Tensor& lse, const at::Tensor& go,
                   const BlockMask& m, double s) {
    return cpu::attention_backward(q, k, v, o, lse, go, m, s, backward_tiles);
  };
  b.tolerances = cpu_tolerances;
  return b;
}

// The backends, and configurations of them worth covering apart.
const std::vector<Backend>& backends() {
  static const std::vector<Backend> all = [] {
    std::vector<Backend> list;
    list.push_back(cpu_backend("cpu", AttentionBackend::cpu, {at::kFloat, at::kBFloat16},
                               cpu::kForwardTiles, cpu::kBackwardTiles));
    // Many query tiles per segment, several chunks per region, ragged last chunks, row groups in
    // partial chunks, groups of one row; and mid-sized tiles on the long pyramid.
    list.push_back(cpu_backend("cpu_tiles16x24g4", std::nullopt, {at::kFloat, at::kBFloat16},
                               {16, 24, 4}, {16, 24, 4}, 200));
    list.push_back(
        cpu_backend("cpu_tiles5x7g1", std::nullopt, {at::kFloat}, {5, 7, 1}, {5, 7, 1}, 200));
    list.push_back(cpu_backend("cpu_tiles64x128g16", std::nullopt, {at::kFloat}, {64, 128, 16},
                               {64, 128, 16}));
#ifdef TESSERA_WITH_CUDA
    Backend gpu;
    gpu.name = "cuda";
    gpu.dispatch = AttentionBackend::cuda;
    gpu.device = at::kCUDA;
    gpu.dtypes = {at::kBFloat16, at::kHalf};
    gpu.head_dim_ok = [](int64_t d) { return d == 64 || d == 128; };
    gpu.forward = cuda::attention_forward;
    gpu.backward = cuda::attention_backward;
    // bfloat16 rounds to 2^-9 relative, float16 to 2^-12; P and dS are rounded to the dtype
    // before their products (as in FlashAttention), the outputs once more.
    gpu.tolerances = [](at::ScalarType dtype) {
      return dtype == at::kBFloat16
                 ? Tolerances{normwise(1.5e-2), elementwise(1e-3, 1e-3), normwise(3e-2)}
                 : Tolerances{normwise(3e-3), elementwise(1e-3, 1e-3), normwise(6e-3)};
    };
    list.push_back(std::move(gpu));
#endif
    return list;
  }();
  return all;
}

// --- mask kinds ----------------------------------------------------------------------------------

struct MaskKind {
  BlockMask mask;
  at::Tensor allowed;  // bool [Lq, Lk], from the kind's definition written here
};

std::vector<std::string> mask_kinds() {
  std::vector<std::string> kinds = testing::all_rule_names();
  for (const char* k : {"causal_tail", "block_causal_last_scale_rows", "intervals_more_keys",
                        "dense_more_keys", "no_visible_key"}) {
    kinds.emplace_back(k);
  }
  return kinds;
}

MaskKind make_kind(const std::string& kind, int64_t length, uint64_t seed) {
  const std::vector<int64_t> segs = testing::test_segments(length);
  if (kind == "causal_tail") {  // a decoding step: the last third of the positions as queries
    const int64_t lq = std::max<int64_t>(1, length / 3);
    at::Tensor allowed = at::zeros({lq, length}, at::kBool);
    for (int64_t q = 0; q < lq; ++q) allowed[q].slice(0, 0, length - lq + q + 1).fill_(true);
    return {BlockMask::causal_tail(lq, length), allowed};
  }
  if (kind == "block_causal_last_scale_rows") {  // one VAR step: the last scale's queries
    const int64_t begin = length - segs.back();
    const BlockMask full = BlockMask::block_causal(TokenLayout(segs));
    return {full.rows(begin, length),
            testing::rule_mask(MaskRule::block_causal, segs).slice(0, begin, length).clone()};
  }
  if (kind == "intervals_more_keys") {  // ragged, some rows empty (the first and the last)
    const int64_t keys = length + 37;
    testing::RandomIntervals iv = testing::random_intervals(length, keys, seed);
    iv.begin.front() = iv.end.front() = 0;
    iv.begin.back() = iv.end.back() = keys;
    return {BlockMask::from_intervals(iv.begin, iv.end, keys, TokenLayout(segs)),
            testing::intervals_mask(iv, keys)};
  }
  if (kind == "dense_more_keys") {  // holes inside rows, a full column block, empty rows
    const int64_t keys = length + 37;
    at::Tensor allowed = testing::random_dense_mask(length, keys, seed);
    allowed.slice(1, 3, 40).fill_(true);
    for (int64_t q = 1; q < length; q += 7) allowed[q].fill_(false);
    return {BlockMask::from_dense(allowed), allowed};
  }
  if (kind == "no_visible_key") {
    const int64_t at_key = length / 2;
    return {BlockMask::from_intervals(std::vector<int64_t>(length, at_key),
                                      std::vector<int64_t>(length, at_key), length),
            at::zeros({length, length}, at::kBool)};
  }
  testing::MaskCase c = testing::make_mask_case(kind, length, seed);
  return {std::move(c.mask), std::move(c.allowed)};
}

// --- shapes --------------------------------------------------------------------------------------

struct Shape {
  int64_t batch, heads, length, head_dim;
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> all{
      {1, 3, 1, 64},   {2, 3, 7, 64},  {1, 2, 65, 128}, {2, 1, 200, 64},
      {1, 1, 680, 64}, {1, 2, 65, 32}, {2, 1, 37, 96},  {1, 2, 130, 256},
  };
  return all;
}

// --- the cases -----------------------------------------------------------------------------------

struct Case {
  size_t backend;
  std::string kind;
  at::ScalarType dtype;
  size_t shape;
};

// A backend whose device this machine lacks has no cases: one skip (BackendOpsCuda.HasADevice)
// says so, rather than one per case.
bool device_present(const Backend& backend) { return backend.device != at::kCUDA || at::hasCUDA(); }

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const std::vector<std::string> kinds = mask_kinds();
  for (size_t b = 0; b < backends().size(); ++b) {
    const Backend& backend = backends()[b];
    if (!device_present(backend)) continue;
    for (const at::ScalarType dtype : backend.dtypes) {
      for (const std::string& kind : kinds) {
        for (size_t s = 0; s < shapes().size(); ++s) {
          const Shape& shape = shapes()[s];
          if (!backend.head_dim_ok(shape.head_dim) || shape.length > backend.max_length) continue;
          cases.push_back({b, kind, dtype, s});
        }
      }
    }
  }
  return cases;
}

std::string dtype_name(at::ScalarType t) {
  return t == at::kFloat ? "Float32" : t == at::kBFloat16 ? "BFloat16" : "Float16";
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  const Shape& s = shapes()[c.shape];
  std::string name = backends()[c.backend].name + "_" + dtype_name(c.dtype) + "_" + c.kind + "_B" +
                     std::to_string(s.batch) + "H" + std::to_string(s.heads) + "L" +
                     std::to_string(s.length) + "D" + std::to_string(s.head_dim);
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

class BackendOps : public ::testing::TestWithParam<Case> {};

// The backend's forward and backward agree with float64 attention within its dtype's
// tolerances; rows that see no key give exactly 0 (lse -inf, zero dq); and tessera::attention
// asked for the backend returns the same bits as its adapter.
TEST_P(BackendOps, ForwardAndBackwardMatchFloat64) {
  const Case& c = GetParam();
  const Backend& backend = backends()[c.backend];
  const Shape& shape = shapes()[c.shape];
  uint64_t seed = 1000 + 17 * c.shape;
  for (const char ch : c.kind) seed = seed * 31 + static_cast<unsigned char>(ch);
  const MaskKind kind = make_kind(c.kind, shape.length, seed);
  ASSERT_TRUE(kind.mask.to_dense().equal(kind.allowed)) << "the BlockMask disagrees with the kind";
  const int64_t lq = kind.mask.query_length(), lk = kind.mask.key_length();
  const at::Device device(backend.device);
  const int64_t B = shape.batch, H = shape.heads, D = shape.head_dim;
  const at::Tensor q = testing::randn({B, H, lq, D}, seed + 1, c.dtype).to(device);
  const at::Tensor k = testing::randn({B, H, lk, D}, seed + 2, c.dtype).to(device);
  const at::Tensor v = testing::randn({B, H, lk, D}, seed + 3, c.dtype).to(device);
  const at::Tensor go = testing::randn({B, H, lq, D}, seed + 4, c.dtype).to(device);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  // The reference sees the same (dtype-rounded) inputs.
  const test_support::DenseAttention want = test_support::dense_attention_float64(
      q.cpu(), k.cpu(), v.cpu(), go.cpu(), kind.allowed, scale);
  const Tolerances tol = backend.tolerances(c.dtype);
  const at::Tensor empty_rows = kind.allowed.any(-1).logical_not().nonzero().squeeze(1);

  const AttentionForward f = backend.forward(q, k, v, kind.mask, scale);
  ASSERT_EQ(f.out.scalar_type(), c.dtype);
  ASSERT_EQ(f.lse.scalar_type(), at::kFloat);
  ASSERT_EQ(f.out.device(), device);
  EXPECT_TRUE(tol.out(f.out, want.out)) << "out";
  EXPECT_TRUE(f.lse.cpu().isneginf().equal(want.lse.isneginf())) << "rows with lse = -inf differ";
  EXPECT_TRUE(tol.lse(f.lse, want.lse)) << "lse";
  if (empty_rows.numel() > 0) {
    EXPECT_TRUE(f.out.cpu().index_select(2, empty_rows).eq(0).all().item<bool>())
        << "rows that see no key must give exactly 0";
  }

  const AttentionGradients g = backend.backward(q, k, v, f.out, f.lse, go, kind.mask, scale);
  ASSERT_EQ(g.dq.scalar_type(), c.dtype);
  EXPECT_TRUE(tol.grad(g.dq, want.dq)) << "dq";
  EXPECT_TRUE(tol.grad(g.dk, want.dk)) << "dk";
  EXPECT_TRUE(tol.grad(g.dv, want.dv)) << "dv";
  if (empty_rows.numel() > 0) {
    EXPECT_TRUE(g.dq.cpu().index_select(2, empty_rows).eq(0).all().item<bool>())
        << "rows that see no key get no gradient";
  }

  if (backend.dispatch) {
    AttentionOptions options;
    options.backend = *backend.dispatch;
    options.scale = scale;
    const at::NoGradGuard no_grad;
    EXPECT_TRUE(attention(q, k, v, kind.mask, options).equal(f.out))
        << "attention() with AttentionBackend::" << to_string(*backend.dispatch)
        << " differs from the backend's forward";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryBackendMaskDtypeShape, BackendOps, ::testing::ValuesIn(all_cases()),
                         case_name);

#ifdef TESSERA_WITH_CUDA
// The CUDA backend's cases run only where there is a device (all_cases leaves them out otherwise).
TEST(BackendOpsCuda, HasADevice) {
  if (!at::hasCUDA()) {
    // The machine, not an install, lacks it: a plain skip (tests/common/prerequisite.h).
    GTEST_SKIP() << "no CUDA device: the CUDA kernels are compiled and linked, but their "
                    "BackendOps cases are not run here";
  }
  int64_t cuda_cases = 0;
  for (const Case& c : all_cases()) cuda_cases += backends()[c.backend].device == at::kCUDA;
  EXPECT_GT(cuda_cases, 0);
}
#else
// The CUDA backend is in backends() only in builds with nvcc.
TEST(BackendOpsCuda, BuiltWithCuda) {
#ifdef TESSERA_CUDA_TURNED_OFF
  // Configured with TESSERA_CUDA=OFF on purpose (make test-sanitize): nothing is missing.
  GTEST_SKIP() << "this build was configured with TESSERA_CUDA=OFF";
#endif
  TESSERA_SKIP_FOR_MISSING(
      "nvcc: this build has no CUDA kernels (the CUDA toolkit was not found at configure time)");
}
#endif

// The kernels stay torch-free and below attention: no source under kernels/ includes ATen, c10,
// torch or a tessera/attention header (the adapters in src/attention/backends do).
TEST(KernelSources, IncludeNoTorchAndNoAttentionHeader) {
  const std::filesystem::path root = tessera::testing::source_dir() / "kernels";
  ASSERT_TRUE(std::filesystem::is_directory(root)) << root;
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      if (line.find("#include") == std::string::npos) continue;
      const bool torch = line.find("<ATen/") != std::string::npos ||
                         line.find("<c10/") != std::string::npos ||
                         line.find("<torch/") != std::string::npos;
      const bool attention = line.find("tessera/attention/") != std::string::npos;
      EXPECT_FALSE(torch || attention) << entry.path().string() << ":" << number << ": " << line;
    }
  }
  EXPECT_GT(files, 0);
}

}  // namespace
}  // namespace tessera
