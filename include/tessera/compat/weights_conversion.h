#pragma once
// `tessera convert`: turning files Tessera wrote into the files it ships.
//
//   * cast_weights_file: a safetensors file (generator, tokenizer, classifier) with its
//     floating-point tensors stored in another dtype, e.g. bf16 to halve a shipped model. The
//     modules keep computing in fp32: loading casts the stored values back (Note [Stored dtype]).
//   * generator_from_checkpoint: the generator inside a `tessera train` checkpoint (its EMA or its
//     trained weights), so a run that stopped before its last step still yields a sampleable file.

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tessera/pipeline/generator.h"
#include "tessera/pipeline/sampling_request.h"
#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

// Note [Stored dtype]
// A bf16 file holds every weight rounded to 8 mantissa bits; the model built from it computes in
// fp32 exactly as the fp32 model whose weights were rounded the same way would. Quality figures
// of a shipped model are therefore measured on the converted file, never inherited from the fp32
// original. Integer tensors (counters, ids) and tensors already in the target dtype are copied
// unchanged; the metadata is kept, with "tessera.stored_dtype" recording the conversion.

/// "bf16", "fp16" or "fp32" (also the safetensors names "BF16", "F16", "F32"). Throws
/// tessera::Error naming the accepted values otherwise.
at::ScalarType parse_stored_dtype(const std::string& name);

struct CastReport {
  int64_t tensors = 0;      ///< in the file
  int64_t cast = 0;         ///< floating tensors converted
  int64_t bytes_before = 0;  ///< tensor data only
  int64_t bytes_after = 0;  ///< tensor data after the cast
};  ///< What cast_weights_file did.

/// Reads `in`, writes `out` (atomically; `in` may equal `out`) with every floating tensor cast to
/// `dtype`. Throws tessera::Error for a non-floating `dtype` or an unreadable file.
CastReport cast_weights_file(const std::filesystem::path& in, const std::filesystem::path& out,
                             at::ScalarType dtype);

/// Rewrites the generator file `path` in place (atomically) with `patch` applied to its sampling
/// defaults as sampling_request does (the schedule's sampling options stored in its schedule
/// section): retuning a shipped model's defaults needs no retraining. New schedule options are
/// checked against the models first (the file is left as it was when they do not fit). Returns
/// the new defaults as a full request (default_request of the new config).
GenerationOptions set_generator_sampling(const std::filesystem::path& path,
                                         const std::string& patch);

/// Which weights of a training checkpoint to take.
enum class CheckpointWeights { ema, trained };

/// The generator a `tessera train` checkpoint holds: its config from the checkpoint's metadata,
/// the given tokenizer (checkpoints do not carry the frozen tokenizer), and the EMA averages or
/// the trained parameters. Throws tessera::Error when the file is not a generator training
/// checkpoint, has no EMA averages and `ema` was asked for, or the tokenizer does not fit.
Generator generator_from_checkpoint(const std::filesystem::path& checkpoint,
                                    std::shared_ptr<Tokenizer> tokenizer,
                                    CheckpointWeights weights);

/// The training step a checkpoint was written at (its "tessera.step" metadata).
int64_t checkpoint_step(const std::filesystem::path& checkpoint);

}  // namespace tessera
