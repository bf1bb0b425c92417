#include "tessera/core/rng.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {
namespace {

std::vector<int64_t> batch_shape(int64_t batch, at::IntArrayRef shape) {
  std::vector<int64_t> out{batch};
  out.insert(out.end(), shape.begin(), shape.end());
  return out;
}

}  // namespace

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  return splitmix64(splitmix64(seed) ^ (stream * 0xd1342543de82ef95ULL + 1));
}

at::Generator make_cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

SampleRngs::SampleRngs(uint64_t seed, int64_t first_index, int64_t count)
    : seed_(seed), first_index_(first_index) {
  TESSERA_CHECK(first_index >= 0, "SampleRngs: first sample index must be >= 0, got {}",
                first_index);
  TESSERA_CHECK(count >= 0, "SampleRngs: sample count must be >= 0, got {}", count);
  generators_.reserve(count);
  for (int64_t i = 0; i < count; ++i) {
    generators_.push_back(
        make_cpu_generator(derive_seed(seed, static_cast<uint64_t>(first_index + i))));
  }
}

const char* reference_multinomial_name(ReferenceMultinomial algorithm) {
  return algorithm == ReferenceMultinomial::inverse_cdf ? "inverse_cdf" : "exponential_race";
}

ReferenceMultinomial reference_multinomial_from_name(const std::string& name) {
  std::string normalized = name;
  std::replace(normalized.begin(), normalized.end(), '-', '_');
  for (const auto algorithm :
       {ReferenceMultinomial::inverse_cdf, ReferenceMultinomial::exponential_race}) {
    if (normalized == reference_multinomial_name(algorithm)) return algorithm;
  }
  TESSERA_FAIL(
      "unknown reference multinomial '{}'; the choices are inverse_cdf (PyTorch <= 1.13) "
      "and exponential_race (PyTorch >= 2.0)",
      name);
}

at::Tensor reference_multinomial(const at::Tensor& probs, at::Generator& generator,
                                 ReferenceMultinomial algorithm) {
  if (algorithm == ReferenceMultinomial::inverse_cdf) {
    return cdf_search_multinomial(probs, generator);
  }
  TESSERA_CHECK(probs.dim() == 2 && probs.device().is_cpu(),
                "reference_multinomial: probs must be [N, V] on the CPU, got {} on {}",
                probs.sizes(), probs.device().str());
  if (probs.size(0) == 0) return at::empty({0}, probs.options().dtype(at::kLong));
  return at::multinomial(probs, 1, /*replacement=*/false, generator).squeeze(1);
}

SampleRngs SampleRngs::shared_stream(uint64_t seed, int64_t count,
                                     ReferenceMultinomial multinomial) {
  TESSERA_CHECK(count >= 0, "SampleRngs: sample count must be >= 0, got {}", count);
  SampleRngs out;
  out.seed_ = seed;
  out.shared_ = true;
  out.multinomial_ = multinomial;
  const at::Generator shared = make_cpu_generator(seed);
  out.generators_.assign(count, shared);  // copies share the generator's state
  return out;
}

at::Generator& SampleRngs::generator(int64_t i) {
  TESSERA_CHECK(i >= 0 && i < size(), "SampleRngs: sample {} out of range [0, {})", i, size());
  return generators_[i];
}

SampleRngs SampleRngs::subset(const std::vector<int64_t>& rows) const {
  SampleRngs out;
  out.seed_ = seed_;
  out.first_index_ = first_index_;
  out.shared_ = shared_;
  out.multinomial_ = multinomial_;
  for (int64_t row : rows) {
    TESSERA_CHECK(row >= 0 && row < size(), "SampleRngs::subset: row {} out of range [0, {})", row,
                  size());
    out.generators_.push_back(generators_[row]);  // at::Generator shares its state when copied
  }
  return out;
}

at::Tensor SampleRngs::uniform(at::IntArrayRef shape, at::Device device) {
  at::Tensor out = at::empty(batch_shape(size(), shape), at::kFloat);
  if (shared_) {
    if (size() > 0) out.uniform_(0.0, 1.0, generators_[0]);  // one call, as torch.rand(B, ...)
    return out.to(device);
  }
  for (int64_t i = 0; i < size(); ++i) {
    out[i].uniform_(0.0, 1.0, generators_[i]);
  }
  return out.to(device);
}

at::Tensor SampleRngs::normal(at::IntArrayRef shape, at::Device device) {
  at::Tensor out = at::empty(batch_shape(size(), shape), at::kFloat);
  if (shared_) {
    // One call over the batch: ATen's normal_ fills 16 values at a time, so row-by-row calls
    // would not give torch.randn(B, ...)'s numbers.
    if (size() > 0) out.normal_(0.0, 1.0, generators_[0]);
    return out.to(device);
  }
  for (int64_t i = 0; i < size(); ++i) {
    out[i].normal_(0.0, 1.0, generators_[i]);
  }
  return out.to(device);
}

at::Tensor SampleRngs::gumbel(at::IntArrayRef shape, at::Device device) {
  // u in [0, 1) from uniform_; clamp away from 0 and 1 so that both logs are finite.
  at::Tensor u = uniform(shape).clamp_(1e-20, 1.0 - 1e-7);
  return (-(-u.log()).log()).to(device);
}

at::Tensor SampleRngs::categorical(const at::Tensor& probs) {
  TESSERA_CHECK(probs.dim() == 2 && probs.size(0) == size(),
                "SampleRngs::categorical: probs must be [{}, V] (one row per sample), got {}",
                size(), probs.sizes());
  at::Tensor p = probs.to(at::kCPU, at::kDouble).contiguous();
  TESSERA_CHECK(p.size(1) > 0, "SampleRngs::categorical: empty vocabulary");
  if (shared_) {
    if (size() == 0) return at::empty({0}, probs.options().dtype(at::kLong));
    return reference_multinomial(probs.to(at::kCPU), generators_[0], multinomial_)
        .to(probs.device());
  }
  TESSERA_CHECK((p >= 0).all().item<bool>() && at::isfinite(p).all().item<bool>(),
                "SampleRngs::categorical: probabilities must be finite and non-negative");
  // Inverse-CDF with one uniform per row: exactly one draw per sample per call, whatever the
  // vocabulary, so streams stay aligned (see Note [Batch-invariant sampling]).
  at::Tensor u = uniform({}).to(at::kDouble);
  at::Tensor cdf = p.cumsum(1);
  at::Tensor total = cdf.select(1, p.size(1) - 1);
  TESSERA_CHECK((total > 0).all().item<bool>(),
                "SampleRngs::categorical: a row of probabilities sums to 0");
  at::Tensor target = (u * total).unsqueeze(1);
  at::Tensor ids = (cdf <= target).sum(1).clamp_max(p.size(1) - 1);
  // A zero-probability token can still be hit when target lands exactly on a flat stretch of the
  // CDF; move to the next token with mass.
  auto acc_ids = ids.accessor<int64_t, 1>();
  auto acc_p = p.accessor<double, 2>();
  for (int64_t i = 0; i < size(); ++i) {
    int64_t id = acc_ids[i];
    while (acc_p[i][id] == 0.0 && id + 1 < p.size(1)) ++id;
    while (acc_p[i][id] == 0.0 && id > 0) --id;
    acc_ids[i] = id;
  }
  return ids.to(probs.device());
}

namespace {

template <typename Real>
void cdf_search_rows(const at::Tensor& probs, at::CPUGeneratorImpl* generator, at::Tensor& ids) {
  const int64_t rows = probs.size(0), vocab = probs.size(1);
  const auto p = probs.accessor<Real, 2>();
  auto out = ids.accessor<int64_t, 1>();
  std::vector<Real> cdf(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < rows; ++i) {
    // The running sum in the input's precision, then divided by the total (not the sum of
    // normalised values): both are what the reference computes, and rounding decides ties.
    Real total = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      const Real v = p[i][j];
      TESSERA_CHECK(v >= 0 && std::isfinite(static_cast<double>(v)),
                    "cdf_search_multinomial: row {} has the entry {} at {} (probabilities must be "
                    "finite and non-negative)",
                    i, static_cast<double>(v), j);
      total += v;
      cdf[j] = total;
    }
    TESSERA_CHECK(total > 0, "cdf_search_multinomial: row {} sums to 0", i);
    for (int64_t j = 0; j < vocab; ++j) cdf[j] /= total;
    cdf[vocab - 1] = 1;
    at::uniform_real_distribution<double> uniform(0.0, 1.0);
    const double u = uniform(generator);
    // The first index whose cumulative value is >= u.
    int64_t low = 0, high = vocab;
    while (low < high) {
      const int64_t mid = low + (high - low) / 2;
      if (static_cast<double>(cdf[mid]) < u) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    out[i] = low;
  }
}

}  // namespace

at::Tensor cdf_search_multinomial(const at::Tensor& probs, at::Generator& generator) {
  TESSERA_CHECK(probs.defined() && probs.dim() == 2 && probs.size(1) >= 1,
                "cdf_search_multinomial: probs must be [N, V] with V >= 1, got {}",
                probs.defined() ? fmt::format("{}", probs.sizes()) : std::string("undefined"));
  TESSERA_CHECK(probs.device().is_cpu(), "cdf_search_multinomial: probs must be on the CPU, got {}",
                probs.device().str());
  TESSERA_CHECK(probs.scalar_type() == at::kFloat || probs.scalar_type() == at::kDouble,
                "cdf_search_multinomial: probs must be float32 or float64, got {}",
                probs.scalar_type());
  const at::Tensor p = probs.contiguous();
  at::Tensor ids = at::empty({p.size(0)}, at::kLong);
  auto* impl = at::check_generator<at::CPUGeneratorImpl>(generator);
  std::lock_guard<std::mutex> lock(impl->mutex_);
  if (p.scalar_type() == at::kFloat) {
    cdf_search_rows<float>(p, impl, ids);
  } else {
    cdf_search_rows<double>(p, impl, ids);
  }
  return ids;
}

}  // namespace tessera
