#pragma once
// MAR (LTH14/mar): masked autoregressive generation of continuous tokens with a diffusion (or
// flow-matching) head — a random order per sample, a truncated-normal mask ratio in training, and
// T-step decoding with the cosine curve.
//
// Sequence (backbone segments {buffer, L}, or {L} without a buffer): MAR's `buffer_size` condition
// positions holding the class embedding, then the L tokens in raster order. By default one
// bidirectional transformer sees every position (Note [MAR mask inputs]); with `encoder_decoder`
// two stacks split the work as MAR's MAE does (Note [MAR encoder–decoder split]).
//
// Note [MAR mask inputs]
// The backbone takes vectors through a Linear input projection and has no mask token. Each token
// row is given C + 1 channels: [value, 0] for a known token, [0, …, 0, 1] for a masked one, so the
// projection maps a masked position to (weight column C) + bias — a learned mask embedding — and a
// known one to its value's projection, which the indicator leaves untouched. The backbone's
// input_channels is therefore C + 1. (MAR itself drops masked tokens in its encoder and inserts a
// learned mask_token in its decoder; without the split, the indicator channel is the smallest
// change that gives the same "learned vector at masked positions".)
//
// Note [MAR encoder–decoder split]
// MAR (models/mar.py) runs an MAE: the encoder sees the buffer and the *visible* tokens only (the
// masked ones are dropped, so with MAR's 70–100 % training mask it runs on a fraction of the
// sequence), the decoder sees every position, with a learned mask token where a token is masked.
// With `encoder_decoder`, ScheduleModels::backbone is the encoder and ScheduleModels::decoder the
// decoder (GeneratorConfig::decoder; mar_decoder_config builds one):
//   encoder  vectors of C channels (no indicator: nothing masked reaches it), condition_tokens =
//            buffer_size >= 1, segments {buffer, L}; each call runs on the buffer rows plus the
//            visible tokens, in increasing position order, with their sequence positions
//            (BackboneForwardOptions::positions) and a bidirectional mask. Every sample of a call
//            has the same number of visible tokens (MAR's one mask ratio per batch in training,
//            the shared mask_len in sampling), so the rows stack without padding.
//   decoder  unconditional (num_classes 0, no condition positions), segments {buffer, L}, vectors
//            of (encoder width + 1) channels: [encoder output, 0] at the buffer and visible rows,
//            [0, …, 0, 1] at masked rows — its input projection is MAR's decoder_embed and the
//            indicator's column plus the bias its mask_token (Note [MAR mask inputs]); its learned
//            positions are MAR's decoder_pos_embed_learned, its final norm MAR's decoder_norm.
//            Its width is the head's hidden width.
// The class condition (with condition dropout for guidance) enters through the encoder's buffer
// rows only, as in MAR. MAR's z_proj_ln (a LayerNorm on the encoder's embedded inputs) is the
// encoder's BackboneConfig::input_norm and its diffusion_pos_embed_learned (learned positions
// added to the decoder's token rows before the head) the decoder's output_positions; MAR's
// published models have both (compat/mar.h), Tessera's own configurations neither by default.
//
// Note [MAR decoding]
// Each sample draws its order as the argsort of L uniforms from its own generator; under the
// reference's shared stream (SampleRngs::shared_stream) the orders are MAR's sample_orders after
// np.random.seed(seed) (core/numpy_random.h), as MAR's sampling script seeds numpy and torch
// alike. Step s of T:
// mask_len = masked_after_step(curve, L, s, T, masked) (Note [Masked decoding counts]); MAR's
// mask_by_order keeps the first mask_len positions of the order masked, so the positions
// predicted now are those masked before and not after (at the last step, all still masked). Their
// hidden rows — the same count K for every sample, in increasing position order, conditional half
// then unconditional half under guidance — go through the head in one call, with
// GenerationProgress {step s of T, num_tokens L, masked_after_step max(mask_len, 1)} for MAR's
// guidance ramp `1 + (cfg − 1)·(L − mask_len)/L`: MAR floors mask_len at 1 at the last step too,
// where it predicts every remaining token, so the last step's weight is 1 + (cfg − 1)·(L − 1)/L,
// not cfg.

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/schedule/masking.h"
#include "tessera/schedule/schedule.h"

namespace tessera {

/// MAR's training mask ratio: a normal(mean, std) truncated to [min, max]
/// (scipy.stats.truncnorm((0.7 − 1)/0.25, 0, loc=1, scale=0.25) by default), one draw per batch
/// as MAR does; ⌈L·ratio⌉ tokens of a sample's random order are masked.
struct MarMaskRatio {
  double min = 0.7;  ///< lower truncation bound
  double max = 1.0;  ///< upper truncation bound
  double mean = 1.0;  ///< the normal's mean
  double std = 0.25;  ///< the normal's standard deviation

  template <class Visitor>
  void visit(Visitor& v) {
    v("min", min);
    v("max", max);
    v("mean", mean);
    v("std", std);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
  /// One draw (rejection sampling of the normal, drawn from `generator`).
  double draw(at::Generator& generator) const;
};

struct MarScheduleConfig {
  int64_t buffer_size = 64;  ///< the backbone's condition_tokens (MAR's buffer_size)
  // --- training ---
  MarMaskRatio mask_ratio{};  ///< training: the mask ratio's distribution
  // --- architecture ---
  /// MAR's MAE encoder–decoder split (Note [MAR encoder–decoder split]): needs a decoder backbone.
  bool encoder_decoder = false;
  /// Sampling defaults (steps, curve); a request may override them (GenerationOptions::schedule).
  MarSamplingOptions sampling{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("buffer_size", buffer_size);
    v("mask_ratio", mask_ratio);
    v("encoder_decoder", encoder_decoder);
    sampling.visit(v);  // flat: the sampling keys sit beside the training ones
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< MarSchedule's options.

/// What MAR's MAE computes for given tokens and mask (MarSchedule::forward).
struct MarEncoderDecoderOutputs {
  /// With encoder_decoder: the encoder's rows [B, buffer + V, encoder width], the buffer rows
  /// first, then the V visible tokens in increasing position order (MAR's forward_mae_encoder).
  /// Undefined for one stack.
  at::Tensor encoded;
  /// The hidden rows the head reads for the L tokens, [B, L, head width] (MAR's
  /// forward_mae_decoder).
  at::Tensor hidden;
};

class MarSchedule final : public Schedule {
 public:
  explicit MarSchedule(MarScheduleConfig config = {});  ///< A schedule with these options.

  const MarScheduleConfig& config() const { return config_; }  ///< Its options.

  std::string name() const override { return "mar"; }
  /// Requires vector inputs with input_channels = C + 1 (Note [MAR mask inputs]), condition_tokens
  /// = buffer_size and segments {buffer, L}, a continuous head of C channels; with
  /// encoder_decoder, the encoder and decoder of Note [MAR encoder–decoder split].
  void check_models(const ScheduleModels& models,
                    const std::vector<TokenGridSize>& grids) const override;
  /// Bidirectional over {buffer, L} (with encoder_decoder: the decoder's mask; the encoder's is
  /// bidirectional over the rows it is given).
  BlockMask training_mask(const std::vector<TokenGridSize>& grids) const override;
  /// The head's loss on every token row with weight 1 at masked positions and 0 elsewhere.
  ScheduleLoss loss(const ScheduleModels& models, const TrainingBatch& batch,
                    at::Generator& generator) override;
  /// The network's forward pass for tokens [B, L, C] (float), mask bool [B, L] (true: masked;
  /// masked values never reach the models; with encoder_decoder every sample must have as many
  /// visible tokens) and labels [B] (the null class, num_classes, for an unconditional row), in
  /// evaluation (no dropout, no condition dropout) and without gradients. Throws tessera::Error for
  /// models check_models refuses or inputs of other shapes.
  MarEncoderDecoderOutputs forward(const ScheduleModels& models, const at::Tensor& tokens,
                                   const at::Tensor& mask, const at::Tensor& labels) const;
  /// The steps must not exceed the L tokens (each step predicts at least one).
  void check_sampling(const std::vector<TokenGridSize>& grids,
                      const GenerationOptions& options) const override;
  /// The sampling options a request's `options.schedule` means (empty: config().sampling).
  /// Throws tessera::Error for options of another schedule.
  const MarSamplingOptions& sampling_options(const GenerationOptions& options) const;

 protected:
  Tokens sample_impl(const ScheduleModels& models, const at::Tensor& labels,
                     const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                     const CheckedHeadOptions& head, SampleRngs& rngs) override;
  int64_t num_steps_impl(const std::vector<TokenGridSize>& grids,
                         const GenerationOptions& options) const override;

 private:
  TokenLayout layout(int64_t tokens) const;
  MarScheduleConfig config_;
};  ///< MAR: masked autoregressive generation of continuous tokens in a random order.

}  // namespace tessera
