#include "tessera/tokenizer/codebook_usage.h"

#include <ATen/ATen.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

void check_ids_in_codebook(const at::Tensor& ids, int64_t codebook_size, const char* what) {
  TESSERA_CHECK(ids.defined(), "{}: ids are an undefined tensor", what);
  TESSERA_CHECK(!at::isFloatingType(ids.scalar_type()) && ids.scalar_type() != at::kBool,
                "{}: ids must be an integer tensor, got {}", what, ids.scalar_type());
  if (ids.numel() == 0) return;
  const at::Tensor outside = at::logical_or(ids < 0, ids >= codebook_size);
  if (!outside.any().item<bool>()) return;
  const at::Tensor flat_ids = ids.flatten();
  const int64_t position = outside.flatten().nonzero()[0][0].item<int64_t>();
  TESSERA_FAIL("{}: id {} at flat position {} is outside the codebook [0, {})", what,
               flat_ids[position].item<int64_t>(), position, codebook_size);
}

at::Tensor code_histogram(const at::Tensor& ids, int64_t codebook_size) {
  TESSERA_CHECK(codebook_size > 0, "code_histogram: codebook_size must be positive, got {}",
                codebook_size);
  check_ids_in_codebook(ids, codebook_size, "code_histogram");
  return at::bincount(ids.flatten().to(at::kLong).cpu(), {}, codebook_size);
}

CodebookUsage codebook_usage_from_histogram(const at::Tensor& histogram) {
  TESSERA_CHECK(histogram.dim() == 1, "codebook_usage: expected a histogram [V], got shape {}",
                histogram.sizes());
  const at::Tensor counts = histogram.to(at::kDouble).cpu();
  TESSERA_CHECK(!(counts < 0).any().item<bool>(), "codebook_usage: histogram has negative counts");
  CodebookUsage usage;
  usage.codebook_size = counts.size(0);
  const double total = counts.sum().item<double>();
  usage.tokens = static_cast<int64_t>(std::llround(total));
  usage.used_codes = (counts > 0).sum().item<int64_t>();
  if (total <= 0) return usage;
  const at::Tensor p = counts / total;
  // 0 · log 0 = 0: only positive entries contribute to the entropy.
  const at::Tensor positive = p.masked_select(p > 0);
  const double entropy = -(positive * positive.log()).sum().item<double>();
  usage.perplexity = std::exp(entropy);
  return usage;
}

}  // namespace tessera
