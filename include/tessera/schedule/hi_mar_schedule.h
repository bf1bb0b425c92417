#pragma once
// Hi-MAR (hierarchical masked autoregression with low-resolution token pivots): phase 1 generates
// a low-resolution pivot grid MAR-style; phase 2 generates the dense grid MAR-style with the pivots
// visible. One backbone and one continuous head serve both phases.
//
// Note [Hi-MAR sequence layout]
// Backbone segments {buffer, P, L} ({P, L} without a buffer): the condition buffer, the P pivot
// tokens of the (h/f)x(w/f) pivot grid, the L dense tokens, each grid in raster order. Pivots are
// the area average of the dense tokens over f x f blocks (the tokenizer is not asked for a
// low-resolution encoding: the pivot of a block is the mean of its tokens, so a pivot grid is a
// coarse summary in the same token space). The mask is block-causal over the three segments:
// buffer rows see the buffer, pivot rows see buffer + pivots, dense rows see everything. So the
// pivot rows never see the dense segment, and phase 1 runs on the first buffer + P rows alone.
// Training makes two examples from each batch with the same backbone: phase 1 masks pivots by
// MAR's rule (truncated-normal ratio, random order) on rows [0, buffer + P); phase 2 shows every
// pivot (ground truth, as sampling shows generated ones) and masks dense tokens by the same rule.
// The loss is pivot_loss_weight·ℓ_pivot + ℓ_dense. Inputs carry the mask indicator channel of
// Note [MAR mask inputs]; a pivot and a dense token at the same input are told apart by their
// positions (learned absolute positions, segment embeddings).
// Sampling: pivot_steps MAR steps over the pivots (calls of buffer + P rows), then dense_steps
// MAR steps over the dense tokens (calls of all rows, pivots as known inputs). GenerationProgress
// counts steps over both phases; num_tokens / masked_after_step are the phase's, so MAR's guidance
// ramp restarts in phase 2. The result holds the dense grid only.

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/schedule/mar_schedule.h"

namespace tessera {

struct HiMarScheduleConfig {
  int64_t buffer_size = 64;  ///< the backbone's condition_tokens (MAR's buffer_size)
  /// Pivot grid = dense grid / pivot_factor on each side (Hi-MAR: 16x16 → 8x8).
  int64_t pivot_factor = 2;
  // --- training ---
  MarMaskRatio mask_ratio{};  ///< training: the mask ratio's distribution
  double pivot_loss_weight = 1.0;  ///< training: weight of the pivot grid's loss
  /// Sampling defaults (pivot_steps, dense_steps, curve); a request may override them
  /// (GenerationOptions::schedule).
  HiMarSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("buffer_size", buffer_size);
    v("pivot_factor", pivot_factor);
    v("mask_ratio", mask_ratio);
    v("pivot_loss_weight", pivot_loss_weight);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< HiMarSchedule's options.

class HiMarSchedule final : public Schedule {
 public:
  explicit HiMarSchedule(HiMarScheduleConfig config = {});  ///< A schedule with these options.

  const HiMarScheduleConfig& config() const { return config_; }  ///< Its options.

  std::string name() const override { return "hi_mar"; }
  /// Requires vector inputs of C + 1 channels, condition_tokens = buffer_size, segments
  /// {buffer, P, L} for the dense grid given, a continuous head, grid sides divisible by
  /// pivot_factor.
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Block-causal over {buffer, P, L}; see Note [Hi-MAR sequence layout].
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const HiMarSamplingOptions& sampling_options(const GenerationOptions& options) const;

  /// The pivot grid of a dense grid.
  TokenGridSize pivot_grid(const TokenGridSize& dense) const;
  /// Area-downsampled pivots of dense tokens [B, h·w, C] → [B, (h/f)·(w/f), C].
  at::Tensor pivots(const at::Tensor& dense, const TokenGridSize& grid) const;

 protected:
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  /// pivot_steps + dense_steps.
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  TokenLayout layout(const TokenGridSize& dense) const;
  HiMarScheduleConfig config_;
};  ///< Hi-MAR: masked generation of a coarse pivot grid, then of the dense grid.

}  // namespace tessera
