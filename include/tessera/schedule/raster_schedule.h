#pragma once
// Next-token prediction in a fixed order (LlamaGen's raster order, or a Halton / near-to-far order;
// see Note [Generation orders] in generation_order.h), one token per step under a causal mask,
// with one class-token prefix and a KV cache when sampling.
//
// Sequence (backbone segments {1, L − 1}, LlamaGen's): row 0 is the class token, row i ≥ 1 holds
// token order[i − 1]; the hidden state of row i predicts token order[i] (the class token predicts
// the first cell). The last token of the order is never an input.
//
// Note [Positions of a generation order]
// The backbone runs at its own sequence positions 0 .. L − 1 in generation order; the schedule
// passes no cell coordinates. The order is fixed — the same permutation for every sample, in
// training and in sampling — so sequence index i names the pair (input cell order[i − 1], target
// cell order[i]) one-to-one, and a learned absolute position embedding at index i *is* a learned
// "next position" query embedding: it tells row i which cell it predicts and where its input sits,
// with no extra parameters and no change to the backbone (the KV cache, masks and checkpoint
// format stay LlamaGen's). What this rules out is a position code with built-in geometry: 2D RoPE
// maps index i to raster cell i − 1, which is a lie for any other order, so check_models rejects
// rope_2d for a non-raster order and requires learned absolute positions there. (A random order
// per sample, as RandAR's, would need explicit target-cell positions instead; this schedule does
// not offer one.)

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/schedule/generation_order.h"
#include "tessera/schedule/schedule.h"

namespace tessera {

struct RasterScheduleConfig {
  GenerationOrder order = GenerationOrder::raster;  ///< the order positions are generated in
  /// Sampling defaults (kv_cache); a request may override them (GenerationOptions::schedule).
  RasterSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("order", order);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const { sampling.validate(); }  ///< Every value is valid.
};  ///< RasterSchedule's options: the order fixed by training, the sampling defaults.

class RasterSchedule final : public Schedule {
 public:
  explicit RasterSchedule(RasterScheduleConfig config = {});  ///< A schedule with these options.

  const RasterScheduleConfig& config() const { return config_; }  ///< Its options.

  std::string name() const override { return "raster"; }
  /// Requires: token-id inputs, a class-conditional backbone with one condition token and segments
  /// {1, L − 1}, vocab_size >= the head's, a discrete head; for a non-raster order learned absolute
  /// positions and no 2D RoPE (Note [Positions of a generation order]).
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Causal over the L rows (segments {1, L − 1}).
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  /// Cross-entropy of every row against the next token of the order (L rows per sample).
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const RasterSamplingOptions& sampling_options(const GenerationOptions& options) const;

 protected:
  /// L steps: step 0 runs the class token (the prefill), step s ≥ 1 the token of step s − 1; step s
  /// yields token order[s]. GenerationProgress: step s of L, no token counts.
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  RasterScheduleConfig config_;
};  ///< Autoregressive generation one token at a time (LlamaGen), in a fixed order.

}  // namespace tessera
