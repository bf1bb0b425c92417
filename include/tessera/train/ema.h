#pragma once
// An exponential moving average of weights, kept beside the trained ones and used for sampling.
//
// After each optimizer step t (counting updates from 0):
//   d_t = decay                                    without warm-up
//   d_t = min(decay, (1 + t) / (10 + t))           with warm-up (the TF / timm ModelEma rule)
//   ema ← d_t·ema + (1 − d_t)·θ
// The average starts as a copy of the weights. Warm-up lets the average follow the fast early
// changes instead of remembering the random initialisation for 1/(1 − decay) steps.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "tessera/core/config.h"

namespace tessera {

struct EmaConfig {
  bool enabled = false;  ///< keep an average
  double decay = 0.999;  ///< weight of the old average per update
  bool warmup = false;  ///< smaller decay over the first updates

  template <class Visitor>
  void visit(Visitor& v) {
    v("enabled", enabled);
    v("decay", decay);
    v("warmup", warmup);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< Whether and how an exponential moving average of the weights is kept.

class ExponentialMovingAverage {
 public:
  /// Copies `parameters` (detached clones) as the starting average.
  ExponentialMovingAverage(const std::map<std::string, at::Tensor>& parameters, EmaConfig config);

  /// The decay used by the update after `updates` earlier updates.
  double decay_at(int64_t updates) const;
  /// One update from the current weights (same names as at construction).
  void update(const std::map<std::string, at::Tensor>& parameters);

  int64_t updates() const { return updates_; }  ///< Updates so far.
  const std::map<std::string, at::Tensor>& averages() const { return averages_; }  ///< By name.
  /// Restores averages and the update count (from a checkpoint); throws tessera::Error for missing
  /// or unexpected names and shape mismatches.
  void load(const std::map<std::string, at::Tensor>& averages, int64_t updates);

 private:
  EmaConfig config_;
  std::map<std::string, at::Tensor> averages_;
  int64_t updates_ = 0;
};  ///< An exponential moving average of named parameters.

}  // namespace tessera
