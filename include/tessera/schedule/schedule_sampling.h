#pragma once
// What each schedule lets sampling choose without retraining, as plain values that travel with a
// request (GenerationOptions::schedule):
//
//   GenerationOptions options;
//   options.schedule = MaskGitSamplingOptions{.steps = 4};
//   Tokens t = schedule.sample(models, labels, grids, options, rngs);
//
// Everything else in a schedule's config — the sequence layout, the order, what the backbone
// learned to read — is fixed by training. Each <Kind>ScheduleConfig holds its <Kind>SamplingOptions
// as `sampling`, the defaults a generator file records; its visit() lists the sampling fields
// inline, so a file's schedule section keeps them as flat keys ({"steps": 8, "curve": "cosine",
// ...} next to "condition_tokens"). A request with no schedule options (the empty
// ScheduleSamplingOptions) samples with those defaults.
//
//   raster                 kv_cache
//   maskgit                steps, curve, choice_temperature, span_scoring
//   mar                    steps, curve
//   next_scale             use_kv_cache
//   hmar                   refinement_steps, refinement_curve, refinement_guidance, mask_schedule
//   hi_mar                 pivot_steps, dense_steps, curve
//   continuous_next_scale  use_kv_cache

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/schedule/masking.h"

namespace tessera {

/// How a MAGNeT span's score comes from its tokens' (Note [Span masking] in maskgit_schedule.h).
enum class SpanScoring { max, mean };

template <>
struct ConfigEnum<SpanScoring> {  /// Each value with its name.
  static constexpr std::pair<SpanScoring, const char*> values[] = {{SpanScoring::max, "max"},
                                                                   {SpanScoring::mean, "mean"}};
};  ///< The names of SpanScoring values in JSON configs.

struct RasterSamplingOptions {
  /// Decode against a KV cache (one row per step). Off: each step re-runs the whole prefix
  /// (slower; the same tokens up to rounding, kept as a cross-check).
  bool kv_cache = true;

  template <class Visitor>
  void visit(Visitor& v) {
    v("kv_cache", kv_cache);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const {}  ///< Every value is valid.
};  ///< RasterSchedule's sampling options.

struct MaskGitSamplingOptions {
  int64_t steps = 8;  ///< T; at most the number of units
  MaskingCurve curve = MaskingCurve::cosine;  ///< how many tokens each step commits
  double choice_temperature = 4.5;  ///< scale of the confidence noise when choosing what to re-mask
  SpanScoring span_scoring = SpanScoring::max;  ///< a span's score from its tokens'

  template <class Visitor>
  void visit(Visitor& v) {
    v("steps", steps);
    v("curve", curve);
    v("choice_temperature", choice_temperature);
    v("span_scoring", span_scoring);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< MaskGitSchedule's sampling options (Note [MaskGIT decoding]).

struct MarSamplingOptions {
  int64_t steps = 64;  ///< MAR's num_iter; at most L
  MaskingCurve curve = MaskingCurve::cosine;  ///< how many tokens each step commits

  template <class Visitor>
  void visit(Visitor& v) {
    v("steps", steps);
    v("curve", curve);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< MarSchedule's sampling options (Note [MAR decoding]).

struct NextScaleSamplingOptions {
  /// Decode against a KV cache (VAR). false recomputes the whole prefix at every scale (the same
  /// numbers, more work): a check and a benchmark baseline.
  bool use_kv_cache = true;

  template <class Visitor>
  void visit(Visitor& v) {
    v("use_kv_cache", use_kv_cache);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const {}  ///< Every value is valid.
};  ///< NextScaleSchedule's sampling options.

struct HmarSamplingOptions {
  /// Refinement steps per scale, coarse to fine; empty or all zero: none (plain HMAR sampling).
  /// Scale 0 (the condition rows) takes none; scale s takes at most pn_s² − 1. Fewer entries than
  /// scales: the rest are 0.
  std::vector<int64_t> refinement_steps{};
  MaskingCurve refinement_curve = MaskingCurve::cosine;  ///< how refinement steps commit tokens
  /// Run refinement steps under the generation's guidance (doubling the batch) rather than
  /// unguided as HMAR does.
  bool refinement_guidance = false;
  /// HMAR's own form (utils/sampling_arg_util.py mask_schedule, e.g. [[1], [1, 3], [1, 1, 2, 5],
  /// [16], …]): per scale, the tokens committed at each step, the next-scale pass first; a scale's
  /// entries sum to its token count. Non-empty: one entry per scale, used instead of
  /// refinement_steps and refinement_curve.
  std::vector<std::vector<int64_t>> mask_schedule{};

  template <class Visitor>
  void visit(Visitor& v) {
    v("refinement_steps", refinement_steps);
    v("refinement_curve", refinement_curve);
    v("refinement_guidance", refinement_guidance);
    v("mask_schedule", mask_schedule);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  /// Ranges that do not depend on the pyramid.
  void validate() const;
};  ///< HmarSchedule's sampling options (Note [HMAR masked refinement]).

struct HiMarSamplingOptions {
  int64_t pivot_steps = 8;  ///< steps on the pivot grid
  int64_t dense_steps = 32;  ///< steps on the dense grid
  MaskingCurve curve = MaskingCurve::cosine;  ///< how many tokens each step commits

  template <class Visitor>
  void visit(Visitor& v) {
    v("pivot_steps", pivot_steps);
    v("dense_steps", dense_steps);
    v("curve", curve);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< HiMarSchedule's sampling options.

struct ContinuousNextScaleSamplingOptions {
  /// Decode against a KV cache; false recomputes the prefix at every scale.
  bool use_kv_cache = true;

  template <class Visitor>
  void visit(Visitor& v) {
    v("use_kv_cache", use_kv_cache);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const {}  ///< Every value is valid.
};  ///< ContinuousNextScaleSchedule's sampling options.

/// The sampling options of one schedule kind, or none (std::monostate: the schedule's defaults).
///
/// A config struct (core/config.h) whose keys are those of the kind it holds, flat:
/// config_detail::read_value over a value holding MaskGitSamplingOptions reads {"steps": 4} into
/// it and refuses {"bogus": 1} naming the key and the kind's keys (sampling_request.h reads
/// `--sampling`'s "schedule" object this way, over the generator's defaults).
struct ScheduleSamplingOptions {
  /// One kind's options, or std::monostate for none.
  using Value = std::variant<std::monostate, RasterSamplingOptions, MaskGitSamplingOptions,
                             MarSamplingOptions, NextScaleSamplingOptions, HmarSamplingOptions,
                             HiMarSamplingOptions, ContinuousNextScaleSamplingOptions>;
  Value value{};  ///< the options, or std::monostate for none

  ScheduleSamplingOptions() = default;
  /// Options of one kind, e.g. ScheduleSamplingOptions(MarSamplingOptions{.steps = 16}).
  template <class T>
    requires(!std::is_same_v<std::remove_cvref_t<T>, ScheduleSamplingOptions> &&
             std::is_constructible_v<Value, T>)
  ScheduleSamplingOptions(T&& options)  // NOLINT(google-explicit-constructor): a value of one kind
      : value(std::forward<T>(options)) {}

  /// No options: the schedule samples with its defaults.
  bool empty() const { return std::holds_alternative<std::monostate>(value); }
  /// The options of kind T, or nullptr when another kind (or none) is held.
  template <class T>
  const T* get() const {
    return std::get_if<T>(&value);
  }
  /// The name of the schedule the options are for ("maskgit", ...), or "none".
  std::string kind_name() const;

  template <class Visitor>
  void visit(Visitor& v) {
    std::visit(
        [&v](auto& options) {
          if constexpr (!std::is_same_v<std::decay_t<decltype(options)>, std::monostate>) {
            options.visit(v);
          }
        },
        value);
  }  ///< Lists the held kind's fields, flat (none for std::monostate).
  void validate() const;  ///< The held kind's validate().
};

/// The options `requested` holds for a schedule whose own kind is T and whose defaults are
/// `defaults`: `defaults` when the request has none, the request's when they are of kind T.
/// Throws tessera::Error naming both schedules when they are of another kind.
template <class T>
const T& resolve_sampling(const ScheduleSamplingOptions& requested, const T& defaults,
                          const char* schedule) {
  if (requested.empty()) return defaults;
  const T* options = requested.get<T>();
  TESSERA_CHECK(options != nullptr,
                "the {} schedule was given the sampling options of the {} schedule", schedule,
                requested.kind_name());
  return *options;
}

}  // namespace tessera
