#pragma once
// The configurations of the heads (what a checkpoint records), JSON-mappable.

#include <cstdint>
#include <utility>

#include "tessera/core/config.h"

namespace tessera {
/// Which head a HeadConfig builds.
enum class HeadKind { discrete, diffusion, flow_matching };

template <>
struct ConfigEnum<HeadKind> {  /// Each value with its name.
  static constexpr std::pair<HeadKind, const char*> values[] = {
      {HeadKind::discrete, "discrete"},
      {HeadKind::diffusion, "diffusion"},
      {HeadKind::flow_matching, "flow_matching"}};
};  ///< The names of HeadKind values in JSON configs.

// --- discrete ------------------------------------------------------------------------------------
/// How a discrete head maps hidden states to logits.
enum class DiscreteProjection {
  /// logits = head(hidden) (LlamaGen's `output`; its final RMSNorm belongs to the backbone).
  linear,
  /// VAR's AdaLNBeforeHead: LayerNorm without affine, then ·(1 + scale) + shift with
  /// (scale, shift) = ada_lin(SiLU(condition)), then the linear head.
  adaln,
};

template <>
struct ConfigEnum<DiscreteProjection> {  /// Each value with its name.
  static constexpr std::pair<DiscreteProjection, const char*> values[] = {
      {DiscreteProjection::linear, "linear"}, {DiscreteProjection::adaln, "adaln"}};
};  ///< The names of DiscreteProjection values in JSON configs.

struct DiscreteHeadConfig {
  /// Defaults are valid (VAR-d16's sizes) so that a HeadConfig's unused members still validate.
  int64_t width = 1024;       ///< hidden width (VAR's C)
  int64_t vocab_size = 4096;  ///< V
  DiscreteProjection projection = DiscreteProjection::linear;  ///< linear or adaln
  int64_t condition_width = 0;  ///< adaln: width of the condition vector (VAR's D)
  bool bias = true;             ///< the linear head's bias (VAR: yes, LlamaGen: no)
  double norm_eps = 1e-6;       ///< adaln's LayerNorm (VAR: 1e-6)
  double label_smoothing = 0.0;  ///< cross-entropy label smoothing, in [0, 1)

  template <class Visitor>
  void visit(Visitor& v) {
    v("width", width);
    v("vocab_size", vocab_size);
    v("projection", projection);
    v("condition_width", condition_width);
    v("bias", bias);
    v("norm_eps", norm_eps);
    v("label_smoothing", label_smoothing);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< DiscreteHead's sizes and options.

// --- continuous: the AdaLN MLP trunk (MAR's SimpleMLPAdaLN) ---------------------------------------

struct AdaLnMlpConfig {
  int64_t token_channels = 16;   ///< channels of one token (MAR: 16, the KL-16 latent)
  int64_t hidden_width = 1024;   ///< width of the backbone vector z (MAR's z_channels)
  int64_t width = 1024;          ///< MLP width (MAR's diffloss_w)
  int64_t depth = 3;             ///< residual blocks (MAR's diffloss_d)
  int64_t frequency_embedding_size = 256;  ///< sinusoidal timestep features

  template <class Visitor>
  void visit(Visitor& v) {
    v("token_channels", token_channels);
    v("hidden_width", hidden_width);
    v("width", width);
    v("depth", depth);
    v("frequency_embedding_size", frequency_embedding_size);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< The AdaLN MLP trunk of the continuous heads (MAR's SimpleMLPAdaLN).
/// The β schedule of a diffusion process.
enum class BetaSchedule { linear, cosine };

template <>
struct ConfigEnum<BetaSchedule> {  /// Each value with its name.
  static constexpr std::pair<BetaSchedule, const char*> values[] = {
      {BetaSchedule::linear, "linear"}, {BetaSchedule::cosine, "cosine"}};
};  ///< The names of BetaSchedule values in JSON configs.

struct DiffusionHeadConfig {
  AdaLnMlpConfig mlp{};  ///< the trunk
  BetaSchedule beta_schedule = BetaSchedule::cosine;  ///< MAR: cosine
  int64_t training_steps = 1000;  ///< steps of the training process
  /// ε-prediction plus a learned interpolation between the posterior variance and β (IDDPM's
  /// "learned range", trained through the variational bound): MAR's default. Off: fixed large
  /// variance (β) and the plain ε MSE.
  bool learn_variance = true;
  /// Each (z, target) row is trained on this many independent (t, ε) draws per loss call (MAR's
  /// diffusion_batch_mul, 4).
  int64_t batch_multiplier = 4;

  template <class Visitor>
  void visit(Visitor& v) {
    v("mlp", mlp);
    v("beta_schedule", beta_schedule);
    v("training_steps", training_steps);
    v("learn_variance", learn_variance);
    v("batch_multiplier", batch_multiplier);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< DiffusionHead's trunk and diffusion process.

struct FlowMatchingHeadConfig {
  AdaLnMlpConfig mlp{};  ///< the trunk
  /// As DiffusionHeadConfig::batch_multiplier: (t, noise) draws per row per loss call.
  int64_t batch_multiplier = 4;

  template <class Visitor>
  void visit(Visitor& v) {
    v("mlp", mlp);
    v("batch_multiplier", batch_multiplier);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< FlowMatchingHead's trunk and training draws.

/// One of the three, by kind (the other two members are ignored).
struct HeadConfig {
  HeadKind kind = HeadKind::discrete;  ///< which head
  DiscreteHeadConfig discrete{};  ///< for kind discrete
  DiffusionHeadConfig diffusion{};  ///< for kind diffusion
  FlowMatchingHeadConfig flow_matching{};  ///< for kind flow_matching

  template <class Visitor>
  void visit(Visitor& v) {
    v("kind", kind);
    v("discrete", discrete);
    v("diffusion", diffusion);
    v("flow_matching", flow_matching);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};

}  // namespace tessera
