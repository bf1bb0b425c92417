#include "tessera/head/token_sampling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/head/guidance.h"

namespace tessera {

namespace {

// Note [Token draws in row blocks]
// Every step of the distribution and the draw works on one row at a time (guidance, temperature,
// top-k, top-p's sort and cumulative sum, softmax, the inverse CDF), so rows can be processed a
// block at a time with the same bits. VAR's last scale at batch 16 has 4,096 rows over 4,096
// codes: whole, the sort's values and int64 indices, the float64 CDF and its temporaries held
// about 0.6 GB at once, more than the reference's whole head; a block of 1,024 rows holds a
// quarter of that.
constexpr int64_t kRowsPerBlock = 1024;

void check_distribution_arguments(const at::Tensor& cond_logits, const at::Tensor& uncond_logits,
                                  double guidance_weight, double temperature,
                                  const DiscreteSamplingOptions& options) {
  TESSERA_CHECK(cond_logits.defined() && cond_logits.dim() == 2 && cond_logits.size(1) >= 1,
                "token distribution: logits must be [N, V] with V >= 1, got {}",
                cond_logits.defined() ? fmt::format("{}", cond_logits.sizes())
                                      : std::string("undefined"));
  const int64_t vocab = cond_logits.size(1);
  TESSERA_CHECK(std::isfinite(temperature) && temperature > 0,
                "token distribution: temperature must be > 0, got {}", temperature);
  TESSERA_CHECK(options.top_k >= 0 && options.top_k <= vocab,
                "token distribution: top_k must be in [0, {}] (0 = off; the vocabulary has {} "
                "tokens), got {}",
                vocab, vocab, options.top_k);
  TESSERA_CHECK(options.top_p > 0 && options.top_p <= 1,
                "token distribution: top_p must be in (0, 1] (1 = off), got {}", options.top_p);
  TESSERA_CHECK(std::isfinite(guidance_weight) && guidance_weight >= 0,
                "token distribution: the guidance weight must be finite and >= 0, got {}",
                guidance_weight);
  TESSERA_CHECK(!uncond_logits.defined() || uncond_logits.sizes() == cond_logits.sizes(),
                "token distribution: unconditional logits {} differ in shape from the "
                "conditional ones {}",
                uncond_logits.sizes(), cond_logits.sizes());
}

// One block of rows, the arguments checked.
at::Tensor distribution_of_rows(const at::Tensor& cond_logits, const at::Tensor& uncond_logits,
                                double guidance_weight, double temperature,
                                const DiscreteSamplingOptions& options) {
  const int64_t vocab = cond_logits.size(1);
  // Half-precision logits are promoted: the cumulative sums of top-p need float32 at least.
  const at::ScalarType dtype =
      cond_logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor logits = cond_logits.to(dtype);
  if (uncond_logits.defined()) {
    logits = apply_guidance(logits, uncond_logits.to(dtype), guidance_weight);
  }
  if (temperature != 1.0) logits = logits / temperature;

  const double minus_inf = -std::numeric_limits<double>::infinity();
  if (options.top_k > 0 && options.top_k < vocab) {
    // Keep logits >= the k-th largest (VAR's `logits < topk(...).amin()` removal).
    at::Tensor kth = std::get<0>(logits.topk(options.top_k, -1)).amin(-1, /*keepdim=*/true);
    logits = logits.masked_fill(logits < kth, minus_inf);
  }
  if (options.top_p < 1.0) {
    // VAR: ascending sort, remove while the cumulative mass from the bottom is <= 1 − p, never
    // the top token. See Note [Token distribution].
    auto [sorted, order] = logits.sort(/*stable=*/true, /*dim=*/-1, /*descending=*/false);
    at::Tensor remove_sorted = sorted.softmax(-1).cumsum(-1) <= (1.0 - options.top_p);
    remove_sorted.select(-1, vocab - 1).fill_(false);
    at::Tensor remove = at::empty_like(remove_sorted).scatter_(-1, order, remove_sorted);
    logits = logits.masked_fill(remove, minus_inf);
  }
  return logits.softmax(-1);
}

}  // namespace

at::Tensor token_distribution(const at::Tensor& cond_logits, const at::Tensor& uncond_logits,
                              double guidance_weight, double temperature,
                              const DiscreteSamplingOptions& options) {
  check_distribution_arguments(cond_logits, uncond_logits, guidance_weight, temperature, options);
  const int64_t rows = cond_logits.size(0);
  if (rows <= kRowsPerBlock) {
    return distribution_of_rows(cond_logits, uncond_logits, guidance_weight, temperature, options);
  }
  // Note [Token draws in row blocks]
  at::Tensor out;
  for (int64_t begin = 0; begin < rows; begin += kRowsPerBlock) {
    const int64_t end = std::min(rows, begin + kRowsPerBlock);
    const at::Tensor block = distribution_of_rows(
        cond_logits.slice(0, begin, end),
        uncond_logits.defined() ? uncond_logits.slice(0, begin, end) : at::Tensor(),
        guidance_weight, temperature, options);
    if (!out.defined()) out = at::empty({rows, block.size(1)}, block.options());
    out.slice(0, begin, end).copy_(block);
  }
  return out;
}

TokenDraw draw_tokens(const at::Tensor& distribution, bool gumbel_max, SampleRngs& rngs) {
  TESSERA_CHECK(distribution.defined() && distribution.dim() == 2 && distribution.size(1) >= 1,
                "draw_tokens: the distribution must be [N, V], got {}",
                distribution.defined() ? fmt::format("{}", distribution.sizes())
                                       : std::string("undefined"));
  const int64_t rows = distribution.size(0);
  const int64_t vocab = distribution.size(1);
  const int64_t samples = rngs.size();
  TESSERA_CHECK(samples >= 1 && rows % samples == 0,
                "draw_tokens: {} rows do not split evenly over {} samples (rows are sample-major: "
                "each sample must have the same number of positions)",
                rows, samples);
  const int64_t per_sample = rows / samples;

  TokenDraw out;
  if (gumbel_max) {
    // argmax(log p + G): removed tokens have log p = −inf and can never win.
    at::Tensor gumbel = rngs.gumbel({per_sample, vocab}, distribution.device()).reshape({rows, vocab});
    out.ids = (distribution.log() + gumbel.to(distribution.scalar_type())).argmax(-1);
  } else if (rngs.shares_one_stream()) {
    // One generator for the batch: the reference's torch.multinomial over all rows, in the
    // distribution's own precision (Note [Reference seeding]).
    out.ids =
        reference_multinomial(distribution.to(at::kCPU), rngs.generator(0), rngs.multinomial())
            .to(distribution.device());
  } else {
    // Inverse CDF in float64 with one uniform per position: the first token whose cumulative
    // mass exceeds u·total. That token has positive probability (the CDF rises there). Rows go a
    // block at a time (Note [Token draws in row blocks]); the uniforms are drawn first, for all.
    const at::Tensor u = rngs.uniform({per_sample}).to(at::kDouble).reshape({rows, 1});
    const at::Tensor positions = at::arange(vocab, at::TensorOptions().dtype(at::kLong));
    at::Tensor ids = at::empty({rows}, at::TensorOptions().dtype(at::kLong));
    for (int64_t begin = 0; begin < rows; begin += kRowsPerBlock) {
      const int64_t end = std::min(rows, begin + kRowsPerBlock);
      const at::Tensor p = distribution.slice(0, begin, end).to(at::kCPU, at::kDouble);
      const at::Tensor cdf = p.cumsum(1);
      const at::Tensor target = u.slice(0, begin, end) * cdf.narrow(1, vocab - 1, 1);
      const at::Tensor block_ids = (cdf <= target).sum(1);
      // u·total can only reach total through rounding; take the last token with mass then.
      const at::Tensor last_positive = ((p > 0).to(at::kLong) * positions).amax(1);
      ids.slice(0, begin, end).copy_(at::where(block_ids >= vocab, last_positive, block_ids));
    }
    out.ids = ids.to(distribution.device());
  }
  out.probabilities = distribution.gather(1, out.ids.unsqueeze(1)).squeeze(1);
  out.log_probabilities = out.probabilities.log();
  return out;
}

}  // namespace tessera
