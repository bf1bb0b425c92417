#include "tessera/tokenizer/tokens.h"

#include <ATen/ATen.h>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

int64_t Tokens::batch_size() const {
  TESSERA_CHECK(!scales.empty(), "Tokens: no scales");
  return scales.front().size(0);
}

bool Tokens::discrete() const {
  TESSERA_CHECK(!scales.empty(), "Tokens: no scales");
  return !at::isFloatingType(scales.front().scalar_type());
}

int64_t Tokens::length() const {
  int64_t total = 0;
  for (const TokenGridSize& grid : grids) total += grid.count();
  return total;
}

TokenLayout Tokens::layout() const {
  std::vector<int64_t> lengths;
  lengths.reserve(grids.size());
  for (const TokenGridSize& grid : grids) lengths.push_back(grid.count());
  return TokenLayout(std::move(lengths));
}

void Tokens::validate() const {
  TESSERA_CHECK(!scales.empty(), "Tokens: expected at least one scale, got none");
  TESSERA_CHECK(scales.size() == grids.size(), "Tokens: {} scale tensors but {} grid sizes",
                scales.size(), grids.size());
  const bool is_discrete = discrete();
  const int64_t batch = scales.front().dim() > 0 ? scales.front().size(0) : -1;
  for (size_t s = 0; s < scales.size(); ++s) {
    const at::Tensor& t = scales[s];
    TESSERA_CHECK(t.defined(), "Tokens: scale {} is an undefined tensor", s);
    TESSERA_CHECK(grids[s].height > 0 && grids[s].width > 0,
                  "Tokens: scale {} has an empty grid {}x{}", s, grids[s].height, grids[s].width);
    if (is_discrete) {
      TESSERA_CHECK(t.scalar_type() == at::kLong,
                    "Tokens: scale {} holds ids of type {}, expected int64 like scale 0", s,
                    t.scalar_type());
      TESSERA_CHECK(t.dim() == 2, "Tokens: scale {} ids must be [B, h*w], got shape {}", s,
                    t.sizes());
    } else {
      TESSERA_CHECK(at::isFloatingType(t.scalar_type()),
                    "Tokens: scale {} has type {}, expected floating point like scale 0", s,
                    t.scalar_type());
      TESSERA_CHECK(t.dim() == 3, "Tokens: scale {} vectors must be [B, h*w, C], got shape {}", s,
                    t.sizes());
    }
    TESSERA_CHECK(t.size(0) == batch, "Tokens: scale {} has batch {}, scale 0 has {}", s, t.size(0),
                  batch);
    TESSERA_CHECK(t.size(1) == grids[s].count(),
                  "Tokens: scale {} has {} tokens, its {}x{} grid needs {}", s, t.size(1),
                  grids[s].height, grids[s].width, grids[s].count());
  }
}

at::Tensor Tokens::concatenated() const {
  validate();
  return at::cat(scales, 1);
}

Tokens split_tokens(const at::Tensor& sequence, const std::vector<TokenGridSize>& grids) {
  TESSERA_CHECK(sequence.dim() == 2 || sequence.dim() == 3,
                "split_tokens: expected [B, L] or [B, L, C], got shape {}", sequence.sizes());
  Tokens tokens;
  tokens.grids = grids;
  int64_t begin = 0;
  for (const TokenGridSize& grid : grids) {
    TESSERA_CHECK(begin + grid.count() <= sequence.size(1),
                  "split_tokens: the grids need more than the sequence's {} tokens",
                  sequence.size(1));
    tokens.scales.push_back(sequence.slice(1, begin, begin + grid.count()));
    begin += grid.count();
  }
  TESSERA_CHECK(begin == sequence.size(1),
                "split_tokens: the grids hold {} tokens, the sequence {}", begin, sequence.size(1));
  return tokens;
}

}  // namespace tessera
