// The generation side of the Python package as TorchScript custom classes: torch.classes.tessera.
// Generator (a generator file, or a VAR / HMAR preset with its reference state dicts given as
// dictionaries of tensors) and torch.classes.tessera.Tokenizer (a tokenizer file), plus the
// operator tessera::write_image_grid. python/tessera/_generation.py wraps them in documented
// Python classes; every method runs through at_python_boundary (boundary.h).

#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "boundary.h"
#include "tessera/compat/preset_state_dicts.h"
#include "tessera/compat/presets.h"
#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/head/discrete_head.h"
#include "tessera/io/image_io.h"
#include "tessera/nn/backbone.h"
#include "tessera/nn/inference_precision.h"
#include "tessera/pipeline/generator.h"
#include "tessera/pipeline/sampling_request.h"
#include "tessera/schedule/schedule_config.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera::python {
namespace {

// Images in [-1, 1] as uint8 pixels, mapped exactly as the PNG files of `tessera sample` map them
// (make_image_grid's conversion: [-1, 1] onto 0..255, clamped).
at::Tensor to_uint8_images(const at::Tensor& images) {
  std::vector<at::Tensor> pixels;
  pixels.reserve(static_cast<size_t>(images.size(0)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    pixels.push_back(make_image_grid(images[i], {.columns = 1, .padding = 0}));
  }
  return at::stack(pixels);
}

template <class Value>
std::map<std::string, Value> to_map(const c10::Dict<std::string, Value>& dict) {
  std::map<std::string, Value> map;
  for (const auto& entry : dict) map.emplace(entry.key(), entry.value());
  return map;
}

// Tokens from Python: one tensor per scale, coarse to fine, on the grids the caller's model has.
Tokens tokens_from(const std::vector<at::Tensor>& scales, std::vector<TokenGridSize> grids) {
  TESSERA_CHECK(scales.size() == grids.size(),
                "tessera: expected {} token tensors (one per scale, coarse to fine), got {}",
                grids.size(), scales.size());
  Tokens tokens{.scales = scales, .grids = std::move(grids)};
  tokens.validate();
  return tokens;
}

struct GeneratorHolder final : torch::CustomClassHolder {
  explicit GeneratorHolder(Generator g) : generator(std::move(g)) {}
  Generator generator;

  // images uint8 [B, C, H, W] and the tokens, one tensor per scale.
  std::tuple<at::Tensor, std::vector<at::Tensor>> sample(const std::optional<at::Tensor>& labels,
                                                         int64_t seed, int64_t first_index,
                                                         bool reference_seeding,
                                                         const std::string& reference_multinomial,
                                                         const std::string& sampling,
                                                         int64_t count) {
    return at_python_boundary([&] {
      TESSERA_CHECK(seed >= 0, "Generator.sample: seed must be >= 0, got {}", seed);
      const std::optional<GenerationOptions> options =
          sampling.empty() ? std::nullopt
                           : std::optional(sampling_request(generator.config(), sampling));
      const at::Tensor label_tensor = labels.has_value() ? *labels : at::Tensor();
      const SampleRequest request{
          .seed = static_cast<uint64_t>(seed),
          .first_index = first_index,
          .reference_seeding = reference_seeding,
          .reference_multinomial = reference_multinomial_from_name(reference_multinomial),
          .options = options};
      const Tokens tokens = generator.sample_tokens(label_tensor, request, count);
      const at::Tensor images = generator.decode(tokens);
      return std::make_tuple(to_uint8_images(images), tokens.scales);
    });
  }

  at::Tensor decode(const std::vector<at::Tensor>& scales) {
    return at_python_boundary([&] {
      return to_uint8_images(generator.decode(tokens_from(scales, generator.token_grids())));
    });
  }

  // VAR's forward(label, var_input): the backbone under the block-causal mask over its scales,
  // then the discrete head, in evaluation mode: logits [B, L, V] for teacher-forcing inputs.
  at::Tensor teacher_forcing_logits(const at::Tensor& inputs, const at::Tensor& labels) {
    return at_python_boundary([&] {
      TESSERA_CHECK(generator.config().schedule.kind == ScheduleKind::next_scale,
                    "Generator.teacher_forcing_logits: defined for next-scale (VAR) generators, "
                    "this one's schedule is {}",
                    config_to_json(generator.config().schedule)["kind"].get<std::string>());
      auto* head = dynamic_cast<DiscreteHead*>(&generator.head());
      TESSERA_CHECK(head != nullptr,
                    "Generator.teacher_forcing_logits: the generator's head is not discrete");
      generator.set_training(false);
      at::NoGradGuard no_grad;
      Backbone& backbone = generator.backbone();
      const BackboneOutput out =
          backbone.forward(inputs, labels, BlockMask::block_causal(backbone.layout()));
      const int64_t batch = out.hidden.size(0), length = out.hidden.size(1);
      return head
          ->logits(out.hidden.reshape({batch * length, backbone.width()}),
                   out.condition.repeat_interleave(length, 0))
          .view({batch, length, -1});
    });
  }

  std::string config_json() const {
    return at_python_boundary([&] { return config_to_json(generator.config()).dump(2); });
  }

  void set_precision(const std::string& name) {
    at_python_boundary([&] {
      generator.set_precision(parse_inference_precision(name, generator.backbone().device().type()));
    });
  }
};

struct TokenizerHolder final : torch::CustomClassHolder {
  explicit TokenizerHolder(std::shared_ptr<Tokenizer> t) : tokenizer(std::move(t)) {}
  std::shared_ptr<Tokenizer> tokenizer;

  std::vector<at::Tensor> encode(const at::Tensor& images) {
    return at_python_boundary([&] {
      TESSERA_CHECK(images.dim() == 4 && images.is_floating_point(),
                    "Tokenizer.encode: expected float images [B, C, H, W] in [-1, 1], got a {} "
                    "tensor of {} dimensions",
                    c10::toString(images.scalar_type()), images.dim());
      at::NoGradGuard no_grad;
      return tokenizer->encode(images.to(at::kFloat)).scales;
    });
  }

  at::Tensor decode(const std::vector<at::Tensor>& scales, int64_t height, int64_t width) {
    return at_python_boundary([&] {
      TESSERA_CHECK(height >= 1 && width >= 1,
                    "Tokenizer.decode: the image size must be positive, got {} x {}", height,
                    width);
      at::NoGradGuard no_grad;
      return tokenizer->decode(tokens_from(scales, tokenizer->token_grids(height, width)));
    });
  }

  std::string config_json() const {
    return at_python_boundary([&] { return config_to_json(tokenizer->config()).dump(2); });
  }
};

c10::intrusive_ptr<GeneratorHolder> load_generator(const std::string& path) {
  return at_python_boundary(
      [&] { return c10::make_intrusive<GeneratorHolder>(Generator::load(path)); });
}

// A published architecture: by preset name, or from architecture metadata (VAR's keys, which
// `tessera convert` and tools/convert_checkpoint.py record: depth, width, heads, patch_nums, ...;
// HMAR when the transformer has HMAR's mask token; LlamaGen's gpt.* keys; MAR's architecture from
// its transformer's tensors), with the reference's state dicts.
c10::intrusive_ptr<GeneratorHolder> load_preset(
    const std::string& name, const c10::Dict<std::string, std::string>& architecture,
    const c10::Dict<std::string, at::Tensor>& transformer,
    const c10::Dict<std::string, at::Tensor>& vae, int64_t seed) {
  return at_python_boundary([&] {
    TESSERA_CHECK(name.empty() != architecture.empty(),
                  "tessera.load_preset: give either a preset name or an architecture, not {}",
                  name.empty() ? "neither" : "both");
    TESSERA_CHECK(seed >= 0, "tessera.load_preset: seed must be >= 0, got {}", seed);
    // LlamaGen by its gpt.* keys, the others by the transformer's tensors (reference_family).
    std::vector<std::string> keys;
    for (const auto& item : transformer) keys.push_back(item.key());
    const PresetFamily family =
        architecture.contains("gpt.dim") ? PresetFamily::llamagen : reference_family(keys);
    const GeneratorPreset preset =
        name.empty()
            ? preset_from_reference_metadata(to_map(architecture), family, to_map(transformer))
            : generator_preset(name);
    return c10::make_intrusive<GeneratorHolder>(preset_generator_from_state_dicts(
        preset, {.transformer = to_map(transformer),
                 .tokenizer = to_map(vae),
                 .init_seed = static_cast<uint64_t>(seed)}));
  });
}

c10::intrusive_ptr<TokenizerHolder> load_tokenizer(const std::string& path) {
  return at_python_boundary([&] {
    return c10::make_intrusive<TokenizerHolder>(
        std::shared_ptr<Tokenizer>(load_tokenizer_checkpoint(path)));
  });
}

void write_image_grid_op(const std::string& path, const at::Tensor& images, int64_t columns,
                         int64_t padding, int64_t pad_value, int64_t upscale) {
  at_python_boundary([&] {
    TESSERA_CHECK(pad_value >= 0 && pad_value <= 255,
                  "tessera.write_image_grid: pad_value must be in 0..255, got {}", pad_value);
    write_image_grid(path, images,
                     {.columns = columns,
                      .padding = padding,
                      .pad_value = static_cast<uint8_t>(pad_value),
                      .upscale = upscale});
  });
}

}  // namespace
}  // namespace tessera::python

TORCH_LIBRARY_FRAGMENT(tessera, m) {
  using tessera::python::GeneratorHolder;
  using tessera::python::TokenizerHolder;
  // Tokenizer first: a method's types must be registered before the method (Generator.tokenizer).
  m.class_<TokenizerHolder>("Tokenizer")
      .def_static("load", &tessera::python::load_tokenizer)
      .def("encode", &TokenizerHolder::encode)
      .def("decode", &TokenizerHolder::decode)
      .def("config_json", &TokenizerHolder::config_json);
  m.class_<GeneratorHolder>("Generator")
      .def_static("load", &tessera::python::load_generator)
      .def_static("load_preset", &tessera::python::load_preset)
      .def("sample", &GeneratorHolder::sample)
      .def("decode", &GeneratorHolder::decode)
      .def("teacher_forcing_logits", &GeneratorHolder::teacher_forcing_logits)
      .def("config_json", &GeneratorHolder::config_json)
      .def("num_classes", [](const c10::intrusive_ptr<GeneratorHolder>& self) {
        return self->generator.num_classes();
      })
      .def("image_size", [](const c10::intrusive_ptr<GeneratorHolder>& self) {
        return self->generator.config().image_size;
      })
      .def("image_channels", [](const c10::intrusive_ptr<GeneratorHolder>& self) {
        return self->generator.config().image_channels;
      })
      .def("precision", [](const c10::intrusive_ptr<GeneratorHolder>& self) {
        return std::string(tessera::to_string(self->generator.precision()));
      })
      .def("set_precision", &GeneratorHolder::set_precision)
      // The generator's own tokenizer; the returned object keeps the generator alive.
      .def("tokenizer", [](const c10::intrusive_ptr<GeneratorHolder>& self) {
        return c10::make_intrusive<TokenizerHolder>(
            std::shared_ptr<tessera::Tokenizer>(&self->generator.tokenizer(),
                                                [owner = self](tessera::Tokenizer*) {}));
      });
  m.def("write_image_grid(str path, Tensor images, int columns, int padding, int pad_value, "
        "int upscale) -> ()",
        &tessera::python::write_image_grid_op);
}
