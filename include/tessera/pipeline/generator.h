#pragma once
// A Generator: one tokenizer, one backbone, one head and one schedule — the composition a user
// trains, ships and samples from. It is what `tessera train` produces and `tessera sample` reads.
//
//   Generator g = Generator::load("models/maskgit_fashion_mnist.safetensors");
//   at::Tensor images = g.sample(labels, {.seed = 7});       // [B, C, H, W] in [−1, 1]
//
// Note [Generator files]
// One safetensors file holds the whole generator, so a shipped model is one file:
//   tokenizer.<key>  the tokenizer's state dict (its reference key names under the prefix)
//   backbone.<key>   the backbone's (VAR's names, Note [Backbone parameter names])
//   decoder.<key>    the decoder backbone's, when the config has one (MAR's encoder–decoder split)
//   head.<key>       the head's (MAR's / VAR's names)
//   refinement_head.<key>  HMAR's masked-prediction head, when the config has one
// and, in __metadata__, "tessera.generator_config" (GeneratorConfig as JSON) and
// "tessera.tokenizer_config" (TokenizerConfig as JSON). Written atomically (save_safetensors), so
// a crash mid-save leaves the previous file intact.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/rng.h"
#include "tessera/head/head.h"
#include "tessera/head/head_config.h"
#include "tessera/nn/autocast.h"
#include "tessera/nn/backbone.h"
#include "tessera/nn/backbone_config.h"
#include "tessera/nn/inference_precision.h"
#include "tessera/schedule/schedule.h"
#include "tessera/schedule/schedule_config.h"
#include "tessera/tokenizer/tokenizer.h"

namespace tessera {

struct GeneratorConfig {
  BackboneConfig backbone{};  ///< the (encoder) backbone
  /// The second stack of MAR's MAE encoder–decoder split (schedule mar with encoder_decoder; see
  /// Note [MAR encoder–decoder split]), where `backbone` is the encoder. null: one stack.
  std::optional<BackboneConfig> decoder{};
  HeadConfig head{};  ///< the head
  /// HMAR's masked-prediction head (mask_head_nm, mask_head): the hmar schedule's refinement pass
  /// and masked training batches use it instead of `head` (Note [HMAR masked refinement]). null:
  /// one head.
  std::optional<HeadConfig> refinement_head{};
  /// The schedule: its training options and, in its section, its sampling defaults (MaskGIT's
  /// steps, ...; schedule_sampling.h), which a request may override (GenerationOptions::schedule).
  ScheduleConfig schedule{};
  /// Sampling defaults (guidance, temperature, top-k/top-p, diffusion/flow steps); a sample call
  /// may override them. Its `schedule` member is not recorded (GenerationOptions::visit): the
  /// schedule's defaults live in `schedule`'s section.
  GenerationOptions sampling{};
  /// Side of the square images the tokenizer encodes and decodes (Fashion-MNIST: 32, padded).
  int64_t image_size = 32;
  int64_t image_channels = 1;  ///< channels of the images

  template <class Visitor>
  void visit(Visitor& v) {
    v("backbone", backbone);
    v("decoder", decoder);
    v("head", head);
    v("refinement_head", refinement_head);
    v("schedule", schedule);
    v("sampling", sampling);
    v("image_size", image_size);
    v("image_channels", image_channels);
  }  ///< Lists the fields for the config reader and writer (core/config.h).
};  ///< A generator's parts (what a generator file records besides the tokenizer).

struct SampleRequest {
  uint64_t seed = 0;  ///< the request's seed
  /// Sample numbering within the request (Note [Batch-invariant sampling]): the batch holds samples
  /// first_index .. first_index + B − 1, so a long request split into batches gives the same
  /// samples as one big batch.
  int64_t first_index = 0;
  /// One generator seeded with `seed` for the whole batch, drawing as VAR's reference sampler does
  /// (Note [Reference seeding] in tessera/core/rng.h): bit-compatible tokens with the reference for
  /// the same seed, batch and settings, but sample i then depends on the batch. Needs
  /// first_index 0 (the reference numbers nothing).
  bool reference_seeding = false;
  /// With reference_seeding: which PyTorch's torch.multinomial the stream reproduces (VAR's
  /// fixture: PyTorch 1.13's inverse CDF; LlamaGen's and anything run under PyTorch 2: the
  /// exponential race).
  ReferenceMultinomial reference_multinomial = ReferenceMultinomial::inverse_cdf;
  /// Overrides config().sampling when set; its `schedule` member, when not empty, overrides the
  /// schedule's sampling defaults (sampling_request.h makes one from a JSON patch).
  std::optional<GenerationOptions> options{};
};  ///< How Generator::sample numbers and seeds its samples.

class Generator {
 public:
  /// Fresh backbone and head (seeded with `seed`) around a given tokenizer. Checks that the parts
  /// fit together (Schedule::check_models) and throws tessera::Error naming what does not.
  Generator(GeneratorConfig config, std::shared_ptr<Tokenizer> tokenizer, uint64_t seed = 0);
  ~Generator();
  Generator(Generator&&) noexcept;  ///< Moves; the source is not usable afterwards.
  Generator& operator=(Generator&&) noexcept;  ///< Moves; the source is not usable afterwards.

  /// See Note [Generator files].
  void save(const std::filesystem::path& path,
            const std::map<std::string, std::string>& extra_metadata = {}) const;
  static Generator load(const std::filesystem::path& path);  ///< Reads save()'s file.

  const GeneratorConfig& config() const { return config_; }  ///< Its configuration.
  Tokenizer& tokenizer() { return *tokenizer_; }  ///< The tokenizer.
  Backbone& backbone() { return backbone_; }  ///< The backbone (MAR: the encoder).
  /// The decoder backbone, or nullptr (GeneratorConfig::decoder).
  Backbone* decoder() { return decoder_.get(); }
  Head& head() { return *head_; }  ///< The head.
  /// The refinement head, or nullptr (GeneratorConfig::refinement_head).
  Head* refinement_head() { return refinement_head_.get(); }
  Schedule& schedule() { return *schedule_; }  ///< The schedule.
  /// Throws tessera::Error naming what is wrong unless `options` can sample from this generator:
  /// valid guidance and head options, schedule options of its schedule's kind that fit its token
  /// grids (MaskGIT's steps at most the token count, ...). sample() checks the same; this lets a
  /// caller refuse a request before any work.
  void check_options(const GenerationOptions& options) const;
  const std::vector<TokenGridSize>& token_grids() const { return grids_; }  ///< One image's grids.
  int64_t num_classes() const { return config_.backbone.num_classes; }  ///< 0: unconditional.

  /// Backbone, decoder, head and refinement head parameters as "backbone.<name>" /
  /// "decoder.<name>" / "head.<name>" / "refinement_head.<name>" (the tokenizer is frozen).
  std::map<std::string, at::Tensor> trainable_parameters() const;
  /// Loads parameters in the same naming (e.g. EMA weights); strict.
  void load_trainable_parameters(const std::map<std::string, at::Tensor>& tensors);
  int64_t num_parameters() const;  ///< Trainable parameters (the tokenizer's excluded).

  /// Tokens of images [B, C, image_size, image_size] in [−1, 1] as TrainingBatch wants them (the
  /// next-scale schedules' teacher-forcing input included), without autograd.
  TrainingBatch encode_batch(const at::Tensor& images, const at::Tensor& labels);
  ScheduleLoss loss(const TrainingBatch& batch, at::Generator& generator);  ///< The training loss.

  /// Class-conditional samples: labels int64 [B] (undefined for an unconditional backbone, then
  /// `count` samples). Runs without autograd in evaluation mode.
  Tokens sample_tokens(const at::Tensor& labels, const SampleRequest& request = {},
                       int64_t count = 0);
  /// The same, decoded: float [B, C, image_size, image_size] in [−1, 1].
  at::Tensor sample(const at::Tensor& labels, const SampleRequest& request = {}, int64_t count = 0);
  /// sample_tokens' tokens to images, as sample() decodes them: in this generator's precision,
  /// on every thread (tessera/tokenizer/thread_invariant_decode.h).
  at::Tensor decode(const Tokens& tokens);

  /// Samples from now on in `precision` (tessera/nn/inference_precision.h): bf16 stores the
  /// matrix-product weights of every part in bfloat16 (rounding them; going back to fp32 keeps the
  /// rounded values) and runs sample(), sample_tokens() and decode() under autocast; int8
  /// quantizes the Linear layers of the backbone, decoder and heads (tessera/nn/int8_linear.h;
  /// going back gives the int8-rounded weights; save() refuses while in int8). Training (loss,
  /// encode_batch) needs fp32 and refuses otherwise.
  void set_precision(InferencePrecision precision);
  InferencePrecision precision() const { return precision_; }  ///< fp32 unless set_precision

  void set_training(bool training);  ///< Training mode of every trained part on or off.

 private:
  ScheduleModels models();
  /// Opens `autocast` to bf16 on `device` when sampling in bf16; leaves it empty otherwise.
  void enter_precision_autocast(std::optional<AutocastGuard>& autocast,
                                c10::DeviceType device) const;

  GeneratorConfig config_;
  std::shared_ptr<Tokenizer> tokenizer_;
  Backbone backbone_;
  std::unique_ptr<Backbone> decoder_;
  std::unique_ptr<Head> head_;
  std::unique_ptr<Head> refinement_head_;
  std::unique_ptr<Schedule> schedule_;
  std::vector<TokenGridSize> grids_;
  InferencePrecision precision_ = InferencePrecision::fp32;
};  ///< A tokenizer, backbone, head and schedule that train and sample together.

}  // namespace tessera
