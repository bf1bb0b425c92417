#pragma once
// A preset's generator from the reference's state dicts already in memory (e.g. the Python
// package's tessera.load_preset, given dictionaries read by torch.load), where
// build_preset_generator (presets.h) reads safetensors files.
//
//   Generator g = preset_generator_from_state_dicts(generator_preset("var-d16"),
//                                                   {.transformer = var_sd, .tokenizer = vae_sd});

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "tessera/compat/presets.h"

namespace tessera {

struct PresetStateDicts {
  /// The transformer's tensors under the reference's key names (VAR's, or HMAR's for a preset
  /// with a refinement head); empty: random weights (init_seed).
  std::map<std::string, at::Tensor> transformer{};
  /// VAR's VQ-VAE tensors under its key names, for the preset's tokenizer architecture (strict:
  /// missing or unexpected keys are an error); empty: random weights.
  std::map<std::string, at::Tensor> tokenizer{};
  uint64_t init_seed = 0;  ///< initialisation of whatever is not loaded
};  ///< Weights for preset_generator_from_state_dicts.

/// The preset's generator with the given weights: the same generator build_preset_generator
/// makes from files holding these tensors (Note [Generator files]). Throws tessera::Error naming
/// the keys that are missing, unexpected or of the wrong shape; nothing is half loaded.
Generator preset_generator_from_state_dicts(const GeneratorPreset& preset,
                                            const PresetStateDicts& weights);

}  // namespace tessera
