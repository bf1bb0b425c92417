#pragma once
// How a codebook is used: how many codes are hit, and the perplexity of the hit distribution.
//
// Perplexity is exp(H(p)) with p the normalised histogram of ids and H the entropy in nats: it is
// the number of codes a uniform distribution with the same entropy would use. K codes hit equally
// often give exactly K; one code hit always gives 1.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tessera {

struct CodebookUsage {
  int64_t codebook_size = 0;  ///< V
  int64_t tokens = 0;      ///< ids counted
  int64_t used_codes = 0;  ///< codes hit at least once
  double perplexity = 0;   ///< exp(entropy of the hit distribution); 0 when no tokens

  /// used_codes / codebook_size.
  double used_fraction() const {
    return codebook_size > 0 ? static_cast<double>(used_codes) / static_cast<double>(codebook_size)
                             : 0.0;
  }
};  ///< How much of a codebook a set of ids uses.

/// Counts of each id: int64 [codebook_size]. Throws tessera::Error when `ids` is not an integer
/// tensor or holds an id outside [0, codebook_size).
at::Tensor code_histogram(const at::Tensor& ids, int64_t codebook_size);

/// Usage and perplexity of a histogram of non-negative counts [codebook_size].
CodebookUsage codebook_usage_from_histogram(const at::Tensor& histogram);

/// Throws tessera::Error naming the first id outside [0, codebook_size) (and its position).
void check_ids_in_codebook(const at::Tensor& ids, int64_t codebook_size, const char* what);

}  // namespace tessera
