#pragma once
// The Tokenizer interface: pixels <-> tokens, plus what a trainer needs (a differentiable forward
// pass, parameters, a state dict).
//
// Images are float [B, C, H, W] in [-1, 1]; decode() returns the same range (clamped). encode()
// and decode() run without autograd; training_forward() is the differentiable path. Tokenizers are
// built in evaluation mode (as VAR's test_mode): call set_training(true) before training.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tessera/tokenizer/tokenizer_config.h"
#include "tessera/tokenizer/tokens.h"

namespace tessera {

class MultiScaleTokenizer;  // tokenizer/multiscale_tokenizer.h

/// What one differentiable forward pass gives the trainer.
struct TokenizerTrainingOutput {
  at::Tensor reconstruction{};  ///< [B, C, H, W], not clamped, differentiable
  /// Scalar added to the reconstruction loss: the VQ loss (codebook + commitment terms), the
  /// weighted KL term, or zero.
  at::Tensor regularization{};
  /// Named scalars for logs ("commitment", "kl", ...), already included in `regularization`;
  /// the trainer averages them over a log interval.
  std::vector<std::pair<std::string, double>> terms{};
  /// Named event counts for logs ("restarted" dead codes); the trainer sums them.
  std::vector<std::pair<std::string, int64_t>> counters{};
  /// Discrete tokenizers: the ids chosen in this pass, per scale (for usage statistics).
  std::vector<at::Tensor> ids{};
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// The configuration this tokenizer was built from (what a checkpoint records).
  virtual TokenizerConfig config() const = 0;

  virtual int64_t image_channels() const = 0;  ///< Channels of the images it encodes.
  /// Image height and width must be multiples of this.
  virtual int64_t downsampling_factor() const = 0;
  /// The token grids of an image of this size; throws tessera::Error when the size does not fit.
  virtual std::vector<TokenGridSize> token_grids(int64_t image_height,
                                                 int64_t image_width) const = 0;
  /// Codebook size of a discrete tokenizer; 0 for continuous tokens.
  virtual int64_t vocab_size() const = 0;
  /// Channels of one token: the code dimension (discrete) or the vector length (continuous).
  virtual int64_t token_channels() const = 0;
  bool discrete() const { return vocab_size() > 0; }  ///< Whether tokens are ids.

  /// Images -> tokens, without autograd. Throws tessera::Error for a bad shape or size.
  virtual Tokens encode(const at::Tensor& images) = 0;
  /// Tokens -> images in [-1, 1], without autograd. Throws tessera::Error for tokens that do not
  /// fit (wrong grids, ids outside the codebook, wrong vector length).
  virtual at::Tensor decode(const Tokens& tokens) = 0;
  /// decode(encode(images)) unless a tokenizer has a shorter path.
  virtual at::Tensor reconstruct(const at::Tensor& images) { return decode(encode(images)); }

  /// The differentiable forward pass used in training (updates EMA codebooks and usage counters
  /// when in training mode).
  virtual TokenizerTrainingOutput training_forward(const at::Tensor& images) = 0;

  /// Trainable parameters.
  virtual std::vector<at::Tensor> parameters() const = 0;
  /// Parameters and buffers under their module paths ("encoder.conv_in.weight", ...).
  virtual std::map<std::string, at::Tensor> state_dict() const = 0;
  /// Copies every tensor of the state dict in; throws tessera::Error naming missing keys,
  /// unexpected keys and shape mismatches (nothing is copied then).
  virtual void load_state_dict(const std::map<std::string, at::Tensor>& tensors) = 0;

  virtual void set_training(bool training) = 0;  ///< Training mode on or off.
  virtual bool is_training() const = 0;  ///< Whether in training mode.
  virtual void to(at::Device device) = 0;  ///< Moves parameters and buffers to `device`.
  virtual at::Device device() const = 0;  ///< Where the parameters are.

  /// The multi-scale residual interface (f̂ and next-scale inputs) the next-scale schedules need,
  /// or nullptr for a tokenizer without one (the default).
  virtual MultiScaleTokenizer* as_multiscale() { return nullptr; }
};  ///< Pixels to tokens and back; see the file's top comment.

}  // namespace tessera
