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
// offers it only where bit-compatibility with a reference is the point (see SharedRng below).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace tessera {

// SplitMix64's output for state x (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
uint64_t splitmix64(uint64_t x);

// A 64-bit mix of a seed and a stream index (SplitMix64 finaliser applied to both); distinct
// (seed, stream) pairs give well-separated seeds.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// A CPU generator seeded with `seed` (ATen's mt19937 CPU generator, as torch.Generator()).
at::Generator make_cpu_generator(uint64_t seed);

// One generator per sample of a batch: samples first_index .. first_index + count - 1 of the
// request seeded with `seed`.
class SampleRngs {
 public:
  SampleRngs(uint64_t seed, int64_t first_index, int64_t count);

  int64_t size() const { return static_cast<int64_t>(generators_.size()); }
  uint64_t seed() const { return seed_; }
  int64_t first_index() const { return first_index_; }
  at::Generator& generator(int64_t i);

  // The generators of the given batch rows (e.g. the samples still running), sharing state with
  // this object: drawing through the subset advances these samples' streams.
  SampleRngs subset(const std::vector<int64_t>& rows) const;

  // Per-sample draws: row i of the result comes from sample i's generator. `shape` is the shape of
  // one sample's draw; results are float32 [size(), shape...] on `device`.
  at::Tensor uniform(at::IntArrayRef shape, at::Device device = at::kCPU);
  at::Tensor normal(at::IntArrayRef shape, at::Device device = at::kCPU);
  // Standard Gumbel noise -log(-log(u)), u uniform in (0, 1).
  at::Tensor gumbel(at::IntArrayRef shape, at::Device device = at::kCPU);
  // One categorical draw per row of probs [size(), V] (non-negative, any positive sum): int64
  // [size()] on probs' device.
  at::Tensor categorical(const at::Tensor& probs);

 private:
  SampleRngs() = default;
  uint64_t seed_ = 0;
  int64_t first_index_ = 0;
  std::vector<at::Generator> generators_;
};

}  // namespace tessera
