#pragma once
// How a head turns its distribution into values: one options value for every head kind, each head
// reading its own part (plain values, passed down from the pipeline with the Guidance).

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"
#include "tessera/head/step_annealing.h"

namespace tessera {

/// Discrete heads. Order of operations (LlamaGen's; VAR has no temperature): guidance on the
/// logits, division by the temperature, top-k, top-p, softmax. See token_sampling.h.
struct DiscreteSamplingOptions {
  /// Keep the tokens whose logit is >= the k-th largest (ties at the k-th all survive, as VAR's
  /// `logits < topk(...).amin()` test); 0 keeps every token. Must not exceed the vocabulary.
  int64_t top_k = 0;
  /// Nucleus: keep a token when the probability of the tokens ranked above it is < top_p (VAR's
  /// rule: the top token always survives). In (0, 1]; 1 keeps every token.
  double top_p = 1.0;
  /// Draw by Gumbel-max (argmax of log p + Gumbel noise, one Gumbel per vocabulary entry) instead
  /// of inverse-CDF with one uniform; both draw from the same distribution.
  bool gumbel_max = false;

  template <class Visitor>
  void visit(Visitor& v) {
    v("top_k", top_k);
    v("top_p", top_p);
    v("gumbel_max", gumbel_max);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};
/// How a diffusion head steps: DDPM or DDIM.
enum class DiffusionSampler { ddpm, ddim };

template <>
struct ConfigEnum<DiffusionSampler> {  /// Each value with its name.
  static constexpr std::pair<DiffusionSampler, const char*> values[] = {
      {DiffusionSampler::ddpm, "ddpm"}, {DiffusionSampler::ddim, "ddim"}};
};  ///< The names of DiffusionSampler values in JSON configs.

/// Diffusion heads (MAR): the training process respaced to `steps` (MAR: 100).
struct DiffusionSamplingOptions {
  DiffusionSampler sampler = DiffusionSampler::ddpm;  ///< ddpm or ddim
  int64_t steps = 100;  ///< sampling steps
  /// DDIM's η: 0 is the deterministic sampler, 1 matches DDPM's posterior variance.
  double ddim_eta = 0.0;
  /// IDDPM's clip_denoised with a range: > 0 clamps every step's x̂_0 to [−clip, clip] (IDDPM
  /// clips images to [−1, 1]); 0 = off, as MAR samples. See Note [Clipping x̂_0] in
  /// diffusion_head.h for why a small head needs it.
  double clip_x_start = 0.0;

  template <class Visitor>
  void visit(Visitor& v) {
    v("sampler", sampler);
    v("steps", steps);
    v("ddim_eta", ddim_eta);
    v("clip_x_start", clip_x_start);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};
/// The ODE solver of a flow-matching head.
enum class FlowSampler { euler, heun };

template <>
struct ConfigEnum<FlowSampler> {  /// Each value with its name.
  static constexpr std::pair<FlowSampler, const char*> values[] = {{FlowSampler::euler, "euler"},
                                                                   {FlowSampler::heun, "heun"}};
};  ///< The names of FlowSampler values in JSON configs.

/// Flow-matching heads: `steps` uniform steps of t from 0 (noise) to 1 (data). Heun evaluates the
/// velocity twice per step.
struct FlowSamplingOptions {
  FlowSampler sampler = FlowSampler::euler;  ///< euler or heun
  int64_t steps = 50;  ///< uniform steps from noise to data

  template <class Visitor>
  void visit(Visitor& v) {
    v("sampler", sampler);
    v("steps", steps);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};

struct HeadSamplingOptions {
  /// > 0. Discrete: logits are divided by it. Diffusion: scales the noise added at each DDPM step
  /// (MAR; the initial noise is not scaled, so DDIM with η = 0 ignores it). Flow matching: scales
  /// the initial noise.
  double temperature = 1.0;
  DiscreteSamplingOptions discrete{};  ///< discrete heads
  DiffusionSamplingOptions diffusion{};  ///< diffusion heads
  FlowSamplingOptions flow{};  ///< flow-matching heads
  /// When enabled, replaces diffusion.steps / flow.steps by the annealed count of the step.
  StepAnnealing step_annealing{};

  /// Checks everything that does not depend on the head (top_k against the vocabulary is the
  /// discrete head's check). Throws tessera::Error naming the option, the allowed range and the
  /// value.
  void validate() const;

  template <class Visitor>
  void visit(Visitor& v) {
    v("temperature", temperature);
    v("discrete", discrete);
    v("diffusion", diffusion);
    v("flow", flow);
    v("step_annealing", step_annealing);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};  ///< How a head samples, per head kind; may change between calls without retraining.

}  // namespace tessera
