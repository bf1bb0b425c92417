#pragma once
// The Head interface: one position's hidden vector → a distribution over that token's value,
// with a training loss and a sampler.
//
//   train:  head.loss(hidden [N, width], targets, {weights, condition, generator}) → scalar
//   sample: head.sample(hidden [N or 2N, width], guidance, options, rngs, {progress, condition})
//           → N values (token ids with their probabilities, or token vectors)
//
// Rows are positions, sample-major: with rngs.size() = B samples and T positions per sample in
// this call, row b·T + t is position t of sample b (T = N / B must be a whole number). Sample b
// draws all its randomness from rngs.generator(b), the same number of draws whatever the batch,
// so that a sample is the same alone or in a batch (see Note [Batch-invariant sampling] in
// core/rng.h; equal up to floating-point rounding of the batched matrix products, which may
// differ with the row count). Under guidance the batch is doubled; see Note [Guidance batch
// layout] in guidance.h.
//
// The heads are torch::nn modules underneath: parameters and state-dict keys are named as in the
// reference implementations (MAR's `net.res_blocks.0.mlp.0.weight`, VAR's `head_nm.ada_lin.1.
// weight`), and module() hands the module to a pipeline that registers it under its own name.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/rng.h"
#include "tessera/head/guidance.h"
#include "tessera/head/head_config.h"
#include "tessera/head/sampling_options.h"

namespace torch::nn {
class Module;
}

namespace tessera {

struct HeadLossOptions {
  /// [N] non-negative row weights (MAR's mask: 1 where a position is predicted); the loss is
  /// Σ w·ℓ / Σ w. Undefined: every row weighs 1.
  at::Tensor weights{};
  /// [N, condition_width]: the condition of an AdaLN-before-head projection (discrete adaln).
  at::Tensor condition{};
  /// Continuous heads draw t and noise from it; the global default generator when empty.
  std::optional<at::Generator> generator{};
};  ///< Options of Head::loss beyond the hidden states and targets.

struct HeadLoss {
  at::Tensor loss{};  ///< scalar, differentiable
  /// Named scalars for logs ("cross_entropy", "mse", "vb", ...); their combination is `loss`.
  std::vector<std::pair<std::string, double>> terms{};
};  ///< A head's training loss and its named terms.

/// What the schedule tells the head about this call besides the hidden states.
struct HeadStep {
  GenerationProgress progress{};  ///< where generation stands
  /// Condition rows for an AdaLN-before-head projection, laid out (and doubled) like the hidden.
  at::Tensor condition{};
};

struct HeadSample {
  /// Discrete: int64 [N] token ids. Continuous: float [N, token_channels] token vectors.
  at::Tensor values{};
  /// Discrete only (undefined otherwise): float [N], the probability and log-probability of each
  /// chosen id under the distribution it was drawn from (after guidance, temperature, top-k and
  /// top-p), which schedules rank by.
  at::Tensor probabilities{};
  at::Tensor log_probabilities{};  ///< see probabilities
};  ///< What Head::sample draws for each row.

class Head {
 public:
  virtual ~Head();
  Head(const Head&) = delete;
  Head& operator=(const Head&) = delete;

  virtual HeadConfig config() const = 0;  ///< Its configuration (what a checkpoint records).
  HeadKind kind() const { return config().kind; }  ///< Discrete, diffusion or flow matching.
  /// The hidden width the head expects.
  virtual int64_t hidden_width() const = 0;
  /// Discrete: V. Continuous: 0.
  virtual int64_t vocab_size() const = 0;
  /// Continuous: channels of a token vector. Discrete: 0.
  virtual int64_t token_channels() const = 0;

  /// Targets: int64 [N] ids (discrete) or float [N, token_channels] (continuous).
  virtual HeadLoss loss(const at::Tensor& hidden, const at::Tensor& targets,
                        const HeadLossOptions& options = {}) = 0;

  /// Runs without autograd. Throws tessera::Error for out-of-range options, shapes that do not fit,
  /// or a row count that the guidance layout and rngs.size() do not divide. Validates `guidance`
  /// and `options`, then draws (sample_impl); a schedule's steps draw through
  /// CheckedHeadOptions::draw instead, which skips the check its request already made.
  HeadSample sample(const at::Tensor& hidden, const Guidance& guidance,
                    const HeadSamplingOptions& options, SampleRngs& rngs,
                    const HeadStep& step = {});

  // --- parameters and persistence ---
  std::vector<at::Tensor> parameters() const;  ///< Trainable parameters.
  /// Parameters and buffers under their module paths.
  std::map<std::string, at::Tensor> state_dict() const;
  /// Copies every tensor in; throws tessera::Error listing missing keys, unexpected keys and
  /// shape mismatches before anything is copied.
  void load_state_dict(const std::map<std::string, at::Tensor>& tensors);
  /// safetensors with the config as JSON in the metadata ("tessera.head_config").
  void save(const std::filesystem::path& path) const;
  /// Loads the weights of a file written by save() (or any safetensors file with the same keys).
  void load(const std::filesystem::path& path);

  void set_training(bool training);  ///< Training mode (dropout, statistics) on or off.
  bool is_training() const;  ///< Whether in training mode.
  void to(at::Device device);  ///< Moves parameters and buffers to `device`.
  at::Device device() const;  ///< Where the parameters are.

  /// The root module (its named_parameters() are state_dict()'s keys), for a pipeline that
  /// registers the head as a submodule.
  std::shared_ptr<torch::nn::Module> module() const { return module_; }

 protected:
  explicit Head(std::shared_ptr<torch::nn::Module> module);  ///< For subclasses: the root module.

  /// The draw itself, for `guidance` and `options` already validated (Head::sample or a
  /// CheckedHeadOptions did it); checks what depends on the head and the call (shapes, row counts,
  /// top_k against the vocabulary).
  virtual HeadSample sample_impl(const at::Tensor& hidden, const Guidance& guidance,
                                 const HeadSamplingOptions& options, SampleRngs& rngs,
                                 const HeadStep& step) = 0;

 private:
  friend class CheckedHeadOptions;
  std::shared_ptr<torch::nn::Module> module_;
};  ///< Turns backbone hidden states into tokens: a loss in training, draws in sampling.

/// A request's guidance and head options, validated once, when constructed. A schedule builds one
/// per sampling request (Schedule::sample does) and draws every step through it: the options
/// cannot change within a request, so Head::sample's check at each of a request's steps (up to
/// hundreds: raster's one per token) would repeat the same comparisons; the type says the check
/// was made, so no path reaches sample_impl unchecked.
class CheckedHeadOptions {
 public:
  /// Throws tessera::Error naming the first invalid option (Guidance::validate,
  /// HeadSamplingOptions::validate).
  CheckedHeadOptions(const Guidance& guidance, const HeadSamplingOptions& options);

  const Guidance& guidance() const { return guidance_; }  ///< The request's guidance.
  const HeadSamplingOptions& options() const { return options_; }  ///< How the head samples.
  /// The same head options without guidance (HMAR's unguided refinement passes).
  CheckedHeadOptions unguided() const;

  /// head.sample(hidden, guidance(), options(), rngs, step) without validating the options again.
  HeadSample draw(Head& head, const at::Tensor& hidden, SampleRngs& rngs,
                  const HeadStep& step = {}) const;

 private:
  struct Checked {};
  CheckedHeadOptions(Checked, const Guidance& guidance, const HeadSamplingOptions& options)
      : guidance_(guidance), options_(options) {}
  Guidance guidance_;
  HeadSamplingOptions options_;
};

/// A fresh head of the configured kind; `seed` drives its initialisation.
std::unique_ptr<Head> make_head(const HeadConfig& config, uint64_t seed = 0);
/// The head a file written by Head::save describes: built from the config in its metadata, then
/// loaded. Throws tessera::Error when the metadata has no config.
std::unique_ptr<Head> load_head(const std::filesystem::path& path);

}  // namespace tessera
