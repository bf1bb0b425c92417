#pragma once
// Seeded random numbers, one generator per sample.
//
// Note [Batch-invariant sampling]
// A sampling request has a base seed and numbers its samples 0, 1, 2, ... Sample i draws every
// random number it needs from its own generator, seeded with derive_seed(base_seed, i) (a
// SplitMix64 mix of the two), and a batch only stacks the per-sample draws. So sample i is the
// same whether it is generated alone, first in a batch of 8, or fifth in a batch of 64: its
// generator, and the sequence of draws made from it, do not depend on its neighbours. The
// schedules make the same sequence of draws per sample at every step whatever the batch (e.g. one
// uniform per position, never "as many as the batch needs"), which is what keeps the streams
// aligned. Draws are made on the CPU with ATen's mt19937-based CPU generator and then moved to the
// tensors' device: the per-step random tensors are small next to the model's work, and a CPU
// stream is identical on every machine.
// The alternative — one generator for the whole batch — is what the reference implementations do
// (VAR seeds one torch.Generator per call); it makes sample i depend on the batch size. Tessera
// offers it only where bit-compatibility with a reference is the point: see
// SampleRngs::shared_stream and Note [Reference seeding].
//
// Note [Reference seeding]
// VAR's autoregressive_infer_cfg seeds one CPU torch.Generator with g_seed and, at every scale,
// calls torch.multinomial(probs.view(-1, V), 1, replacement=True, generator=g) on the guided
// distribution of the whole batch: rows sample-major (sample 0's positions first). PyTorch up to
// 1.13 (the VAR fixture's version) implements that draw on the CPU by inverse CDF: per row, the
// running sum of the probabilities in the tensor's own dtype, divided by the total, the last entry
// set to 1; one uniform double per row (53 random bits of the mt19937 stream); the result is the
// first index whose cumulative value is not below the uniform (a binary search).
// cdf_search_multinomial() is that algorithm; SampleRngs::shared_stream(seed, B) is one generator
// for the batch that, together with draw_tokens(), makes the same draws in the same order. Later
// PyTorch versions (2.x) draw a single multinomial sample by the exponential race (argmax of p/E,
// E ~ Exp(1)) instead, so the same seed gives other tokens there; Tessera follows the 1.13 stream
// for VAR because its published fixture was made with it; LlamaGen's fixture (torch 2.11) draws by
// the exponential race, which is this libtorch's own at::multinomial. ReferenceMultinomial names
// the two, and a shared stream draws by the one it was made with. The mt19937 stream itself is the
// same in both (tests/core/rng_test.cpp checks exponential_ against the fixture).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

/// How a shared stream (SampleRngs::shared_stream) draws one categorical sample per row, i.e.
/// which PyTorch's torch.multinomial(probs, 1) it reproduces (Note [Reference seeding]).
enum class ReferenceMultinomial {
  inverse_cdf,       ///< PyTorch <= 1.13 on the CPU: cdf_search_multinomial (VAR's fixture)
  exponential_race,  ///< PyTorch >= 2.0: argmax(p / E), E ~ Exp(1) over the whole [N, V] tensor
};

/// "inverse_cdf" or "exponential_race".
const char* reference_multinomial_name(ReferenceMultinomial algorithm);
/// The algorithm of that name (a '-' may stand for the '_'); throws tessera::Error listing the
/// names otherwise.
ReferenceMultinomial reference_multinomial_from_name(const std::string& name);

/// SplitMix64's output for state x (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
uint64_t splitmix64(uint64_t x);

/// A 64-bit mix of a seed and a stream index (SplitMix64 finaliser applied to both); distinct
/// (seed, stream) pairs give well-separated seeds.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

/// A CPU generator seeded with `seed` (ATen's mt19937 CPU generator, as torch.Generator()).
at::Generator make_cpu_generator(uint64_t seed);

/// One generator per sample of a batch: samples first_index to first_index + count - 1 of the
/// request seeded with `seed`.
class SampleRngs {
 public:
  SampleRngs(uint64_t seed, int64_t first_index, int64_t count);  ///< See the class description.
  /// One CPU generator seeded with `seed` itself (torch.Generator().manual_seed(seed)) for all
  /// `count` samples: every draw is one call over the whole batch, sample-major, as the reference
  /// implementations draw (Note [Reference seeding]). Sample i then depends on the batch.
  static SampleRngs shared_stream(
      uint64_t seed, int64_t count,
      ReferenceMultinomial multinomial = ReferenceMultinomial::inverse_cdf);
  bool shares_one_stream() const { return shared_; }  ///< Whether all share one generator.
  /// How a shared stream draws categorical samples (draw_tokens, categorical).
  ReferenceMultinomial multinomial() const { return multinomial_; }

  int64_t size() const { return static_cast<int64_t>(generators_.size()); }  ///< Number of samples.
  uint64_t seed() const { return seed_; }  ///< The request's seed.
  int64_t first_index() const { return first_index_; }  ///< Index of sample 0 within the request.
  at::Generator& generator(int64_t i);  ///< The generator of batch row `i`.

  /// The generators of the given batch rows (e.g. the samples still running), sharing state with
  /// this object: drawing through the subset advances these samples' streams.
  SampleRngs subset(const std::vector<int64_t>& rows) const;

  /// Per-sample draws: row i of the result comes from sample i's generator. `shape` is the shape of
  /// one sample's draw; results are float32 [size(), shape...] on `device`.
  at::Tensor uniform(at::IntArrayRef shape, at::Device device = at::kCPU);
  at::Tensor normal(at::IntArrayRef shape, at::Device device = at::kCPU);  ///< N(0, 1) draws.
  /// Standard Gumbel noise -log(-log(u)), u uniform in (0, 1).
  at::Tensor gumbel(at::IntArrayRef shape, at::Device device = at::kCPU);
  /// One categorical draw per row of probs [size(), V] (non-negative, any positive sum): int64
  /// [size()] on probs' device.
  at::Tensor categorical(const at::Tensor& probs);

 private:
  SampleRngs() = default;
  uint64_t seed_ = 0;
  int64_t first_index_ = 0;
  std::vector<at::Generator> generators_;  // with a shared stream: copies of one generator
  bool shared_ = false;
  ReferenceMultinomial multinomial_ = ReferenceMultinomial::inverse_cdf;
};

/// torch.multinomial(probs, 1, replacement=True, generator) as PyTorch <= 1.13 computes it on the
/// CPU (Note [Reference seeding]): one uniform double from `generator` per row of probs [N, V]
/// (float32 or float64, on the CPU; rows need not be normalised), rows in order. int64 [N]. Throws
/// tessera::Error for a negative or non-finite entry or a row summing to 0.
at::Tensor cdf_search_multinomial(const at::Tensor& probs, at::Generator& generator);

/// torch.multinomial(probs, 1, generator) as the named PyTorch version draws it on the CPU, for
/// probs [N, V] on the CPU: cdf_search_multinomial, or this libtorch's at::multinomial (one
/// exponential_ call over the whole tensor, then argmax(probs / E) per row). int64 [N].
at::Tensor reference_multinomial(const at::Tensor& probs, at::Generator& generator,
                                 ReferenceMultinomial algorithm);

}  // namespace tessera
