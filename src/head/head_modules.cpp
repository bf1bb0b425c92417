// The heads' torch::nn modules. See Note [Head module paths] in head_modules.h for the names.

#include "head/head_modules.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/rng.h"
#include "tessera/nn/linear.h"

namespace tessera::head_detail {
namespace {

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias = true) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// --- initialisation, from one seeded generator (torch::nn::init takes no generator) ------------

void xavier_uniform(const torch::nn::Linear& linear, at::Generator& gen) {
  const auto& w = linear->weight;
  const double bound = std::sqrt(6.0 / static_cast<double>(w.size(0) + w.size(1)));
  w.uniform_(-bound, bound, gen);
  if (linear->bias.defined()) linear->bias.zero_();
}

void normal_init(const torch::nn::Linear& linear, double std, at::Generator& gen) {
  linear->weight.normal_(0.0, std, gen);
  if (linear->bias.defined()) linear->bias.zero_();
}

void zero_init(const torch::nn::Linear& linear) {
  linear->weight.zero_();
  if (linear->bias.defined()) linear->bias.zero_();
}

// nn.Sequential(Linear, SiLU, Linear): children "0" and "2".
struct LinearSiluLinear : torch::nn::Module {
  LinearSiluLinear(int64_t in, int64_t hidden, int64_t out)
      : first(register_module("0", make_linear(in, hidden))),
        second(register_module("2", make_linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) {
    return ::tessera::linear(at::silu(::tessera::linear(x, *first)), *second);
  }
  torch::nn::Linear first, second;
};

// nn.Sequential(SiLU, Linear): child "1".
// forward_activated takes SiLU(y) itself, which the adaLN layers of one net share.
struct SiluLinear : torch::nn::Module {
  SiluLinear(int64_t in, int64_t out) : linear(register_module("1", make_linear(in, out))) {}
  at::Tensor forward(const at::Tensor& y) { return forward_activated(at::silu(y)); }
  at::Tensor forward_activated(const at::Tensor& activated) {
    return ::tessera::linear(activated, *linear);
  }
  torch::nn::Linear linear;
};

// x·(1 + scale) + shift
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return x * (1 + scale) + shift;
}

struct TimestepEmbedder : torch::nn::Module {
  TimestepEmbedder(int64_t width, int64_t frequency_size)
      : frequency_size(frequency_size),
        mlp(register_module("mlp", std::make_shared<LinearSiluLinear>(frequency_size, width,
                                                                        width))) {}
  at::Tensor forward(const at::Tensor& t) {
    return mlp->forward(timestep_embedding(t, frequency_size).to(t.device()));
  }
  int64_t frequency_size;
  std::shared_ptr<LinearSiluLinear> mlp;
};

// x + gate·mlp(LN(x)·(1 + scale) + shift), (shift, scale, gate) from y.
struct ResBlock : torch::nn::Module {
  explicit ResBlock(int64_t channels)
      : in_ln(register_module(
            "in_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}).eps(1e-6)))),
        mlp(register_module("mlp",
                            std::make_shared<LinearSiluLinear>(channels, channels, channels))),
        adaLN_modulation(register_module("adaLN_modulation",
                                         std::make_shared<SiluLinear>(channels, 3 * channels))) {}
  // silu_y = SiLU(y).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& silu_y) {
    auto chunks = adaLN_modulation->forward_activated(silu_y).chunk(3, -1);
    at::Tensor h = modulate(in_ln(x), chunks[0], chunks[1]);
    return x + chunks[2] * mlp->forward(h);
  }
  torch::nn::LayerNorm in_ln;
  std::shared_ptr<LinearSiluLinear> mlp;
  std::shared_ptr<SiluLinear> adaLN_modulation;
};

// DiT's final layer: LayerNorm without affine, modulated by (shift, scale) from y, then linear.
struct FinalLayer : torch::nn::Module {
  FinalLayer(int64_t channels, int64_t out_channels)
      : channels(channels),
        linear(register_module("linear", make_linear(channels, out_channels))),
        adaLN_modulation(register_module("adaLN_modulation",
                                         std::make_shared<SiluLinear>(channels, 2 * channels))) {}
  // silu_y = SiLU(y).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& silu_y) {
    auto chunks = adaLN_modulation->forward_activated(silu_y).chunk(2, -1);
    at::Tensor normed = at::layer_norm(x, {channels}, {}, {}, 1e-6);
    return ::tessera::linear(modulate(normed, chunks[0], chunks[1]), *linear);
  }
  int64_t channels;
  torch::nn::Linear linear;
  std::shared_ptr<SiluLinear> adaLN_modulation;
};

// Holds children "0", "1", ... (nn.ModuleList's names).
struct IndexedChildren : torch::nn::Module {};

struct SimpleMlpAdaLn : torch::nn::Module {
  SimpleMlpAdaLn(const AdaLnMlpConfig& config, int64_t out_channels)
      : time_embed(register_module("time_embed", std::make_shared<TimestepEmbedder>(
                                                     config.width,
                                                     config.frequency_embedding_size))),
        cond_embed(register_module("cond_embed", make_linear(config.hidden_width, config.width))),
        input_proj(register_module("input_proj",
                                   make_linear(config.token_channels, config.width))),
        res_block_list(register_module("res_blocks", std::make_shared<IndexedChildren>())),
        final_layer(register_module("final_layer",
                                    std::make_shared<FinalLayer>(config.width, out_channels))) {
    for (int64_t i = 0; i < config.depth; ++i) {
      res_blocks.push_back(res_block_list->register_module(
          std::to_string(i), std::make_shared<ResBlock>(config.width)));
    }
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& z) {
    return forward_embedded(x, time_embed->forward(t) + ::tessera::linear(z, *cond_embed));
  }
  // y = time_embed(t) + cond_embed(z), given; SiLU(y) is computed once for every adaLN.
  at::Tensor forward_embedded(const at::Tensor& x, const at::Tensor& y) {
    at::Tensor h = ::tessera::linear(x, *input_proj);
    const at::Tensor silu_y = at::silu(y);
    for (auto& block : res_blocks) h = block->forward(h, silu_y);
    return final_layer->forward(h, silu_y);
  }

  // MAR's initialize_weights.
  void initialize(uint64_t seed) {
    at::NoGradGuard no_grad;
    at::Generator gen = make_cpu_generator(seed);
    for (auto* linear : {&cond_embed, &input_proj, &final_layer->linear}) xavier_uniform(*linear, gen);
    for (auto& block : res_blocks) {
      xavier_uniform(block->mlp->first, gen);
      xavier_uniform(block->mlp->second, gen);
      zero_init(block->adaLN_modulation->linear);
    }
    normal_init(time_embed->mlp->first, 0.02, gen);
    normal_init(time_embed->mlp->second, 0.02, gen);
    zero_init(final_layer->adaLN_modulation->linear);
    zero_init(final_layer->linear);
  }

  std::shared_ptr<TimestepEmbedder> time_embed;
  torch::nn::Linear cond_embed, input_proj;
  std::shared_ptr<IndexedChildren> res_block_list;
  std::vector<std::shared_ptr<ResBlock>> res_blocks;
  std::shared_ptr<FinalLayer> final_layer;
};

void check_rows(const at::Tensor& t, int64_t rows, int64_t columns, const char* what,
                const char* owner) {
  TESSERA_CHECK(t.defined() && t.dim() == 2 && t.size(0) == rows && t.size(1) == columns,
                "{}: {} must be [{}, {}], got {}", owner, what, rows, columns,
                t.defined() ? fmt::format("{}", t.sizes()) : std::string("an undefined tensor"));
}

}  // namespace

// --- DiscreteProjectionNet --------------------------------------------------------------------------

struct DiscreteProjectionNet::Modules {
  struct Root : torch::nn::Module {
    explicit Root(const DiscreteHeadConfig& config) : config(config) {
      if (config.projection == DiscreteProjection::adaln) {
        head_nm = register_module("head_nm", std::make_shared<IndexedChildren>());
        ada_lin = head_nm->register_module(
            "ada_lin", std::make_shared<SiluLinear>(config.condition_width, 2 * config.width));
      }
      head = register_module("head", make_linear(config.width, config.vocab_size, config.bias));
    }
    DiscreteHeadConfig config;
    std::shared_ptr<IndexedChildren> head_nm;
    std::shared_ptr<SiluLinear> ada_lin;
    torch::nn::Linear head{nullptr};
  };
  std::shared_ptr<Root> root;
};

DiscreteProjectionNet::DiscreteProjectionNet(const DiscreteHeadConfig& config, uint64_t seed)
    : modules_(std::make_shared<Modules>()) {
  config.validate();
  modules_->root = std::make_shared<Modules::Root>(config);
  at::NoGradGuard no_grad;
  at::Generator gen = make_cpu_generator(seed);
  normal_init(modules_->root->head, 0.02, gen);
  if (modules_->root->ada_lin) normal_init(modules_->root->ada_lin->linear, 0.02, gen);
}

DiscreteProjectionNet::~DiscreteProjectionNet() = default;

at::Tensor DiscreteProjectionNet::forward(const at::Tensor& hidden,
                                          const at::Tensor& condition) const {
  auto& root = *modules_->root;
  const DiscreteHeadConfig& config = root.config;
  TESSERA_CHECK(hidden.defined() && hidden.dim() == 2 && hidden.size(1) == config.width,
                "DiscreteHead: hidden must be [N, {}], got {}", config.width,
                hidden.defined() ? fmt::format("{}", hidden.sizes()) : std::string("undefined"));
  if (config.projection == DiscreteProjection::linear) {
    TESSERA_CHECK(!condition.defined(),
                  "DiscreteHead: the linear projection takes no condition (got one of shape {})",
                  condition.sizes());
    return ::tessera::linear(hidden, *root.head);
  }
  check_rows(condition, hidden.size(0), config.condition_width, "the condition", "DiscreteHead");
  auto chunks = root.ada_lin->forward(condition).chunk(2, -1);  // VAR: (scale, shift)
  at::Tensor normed = at::layer_norm(hidden, {config.width}, {}, {}, config.norm_eps);
  return ::tessera::linear(modulate(normed, chunks[1], chunks[0]), *root.head);
}

std::shared_ptr<torch::nn::Module> DiscreteProjectionNet::root() const { return modules_->root; }

// --- AdaLnMlpNet ----------------------------------------------------------------------------------

struct AdaLnMlpNet::Modules {
  struct Root : torch::nn::Module {
    Root(const AdaLnMlpConfig& config, int64_t out_channels)
        : config(config),
          net(register_module("net", std::make_shared<SimpleMlpAdaLn>(config, out_channels))) {}
    AdaLnMlpConfig config;
    std::shared_ptr<SimpleMlpAdaLn> net;
  };
  std::shared_ptr<Root> root;
};

AdaLnMlpNet::AdaLnMlpNet(const AdaLnMlpConfig& config, int64_t out_channels, uint64_t seed)
    : modules_(std::make_shared<Modules>()) {
  config.validate();
  TESSERA_CHECK(out_channels >= 1, "AdaLnMlpNet: out_channels must be >= 1, got {}", out_channels);
  modules_->root = std::make_shared<Modules::Root>(config, out_channels);
  modules_->root->net->initialize(seed);
}

AdaLnMlpNet::~AdaLnMlpNet() = default;

at::Tensor AdaLnMlpNet::forward(const at::Tensor& x, const at::Tensor& t,
                                const at::Tensor& z) const {
  const AdaLnMlpConfig& config = modules_->root->config;
  TESSERA_CHECK(x.defined() && x.dim() == 2 && x.size(1) == config.token_channels,
                "AdaLN MLP: tokens must be [N, {}], got {}", config.token_channels,
                x.defined() ? fmt::format("{}", x.sizes()) : std::string("undefined"));
  check_rows(z, x.size(0), config.hidden_width, "z (the backbone vectors)", "AdaLN MLP");
  TESSERA_CHECK(t.defined() && t.dim() == 1 && t.size(0) == x.size(0),
                "AdaLN MLP: timesteps must be [{}], got {}", x.size(0),
                t.defined() ? fmt::format("{}", t.sizes()) : std::string("undefined"));
  return modules_->root->net->forward(x, t, z);
}

at::Tensor AdaLnMlpNet::embed_condition(const at::Tensor& z) const {
  const AdaLnMlpConfig& config = modules_->root->config;
  check_rows(z, z.defined() ? z.size(0) : 0, config.hidden_width, "z (the backbone vectors)",
             "AdaLN MLP");
  return ::tessera::linear(z, *modules_->root->net->cond_embed);
}

at::Tensor AdaLnMlpNet::embed_timesteps(const at::Tensor& t) const {
  TESSERA_CHECK(t.defined() && t.dim() == 1, "AdaLN MLP: timesteps must be [S], got {}",
                t.defined() ? fmt::format("{}", t.sizes()) : std::string("undefined"));
  return modules_->root->net->time_embed->forward(t);
}

at::Tensor AdaLnMlpNet::forward_embedded(const at::Tensor& x, const at::Tensor& y) const {
  const AdaLnMlpConfig& config = modules_->root->config;
  TESSERA_CHECK(x.defined() && x.dim() == 2 && x.size(1) == config.token_channels,
                "AdaLN MLP: tokens must be [N, {}], got {}", config.token_channels,
                x.defined() ? fmt::format("{}", x.sizes()) : std::string("undefined"));
  check_rows(y, x.size(0), config.width, "y (the embedded condition)", "AdaLN MLP");
  return modules_->root->net->forward_embedded(x, y);
}

at::Tensor AdaLnMlpNet::forward_guided(const at::Tensor& x, const at::Tensor& t,
                                       const at::Tensor& z_pair, double weight,
                                       int64_t guided_channels) const {
  return forward_guided_embedded(
      x, embed_timesteps(at::cat({t, t})) + embed_condition(z_pair), weight, guided_channels);
}

at::Tensor AdaLnMlpNet::forward_guided_embedded(const at::Tensor& x, const at::Tensor& y_pair,
                                                double weight, int64_t guided_channels) const {
  const int64_t rows = x.size(0);
  at::Tensor out = forward_embedded(at::cat({x, x}), y_pair);
  at::Tensor cond = out.narrow(0, 0, rows);
  at::Tensor uncond = out.narrow(0, rows, rows);
  at::Tensor guided = uncond.narrow(1, 0, guided_channels) +
                      (cond.narrow(1, 0, guided_channels) - uncond.narrow(1, 0, guided_channels)) *
                          weight;
  if (guided_channels == out.size(1)) return guided;
  return at::cat({guided, cond.narrow(1, guided_channels, out.size(1) - guided_channels)}, 1);
}

std::shared_ptr<torch::nn::Module> AdaLnMlpNet::root() const { return modules_->root; }

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  // Frequencies in float32 as the reference computes them (exp of a float32 arange).
  at::Tensor freqs =
      at::exp(-std::log(10000.0) * at::arange(half, at::TensorOptions().dtype(at::kFloat)) /
              static_cast<double>(half))
          .to(t.device());
  at::Tensor args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  at::Tensor embedding = at::cat({at::cos(args), at::sin(args)}, -1);
  if (dim % 2 == 1) embedding = at::cat({embedding, at::zeros_like(embedding.narrow(1, 0, 1))}, -1);
  return embedding;
}

}  // namespace tessera::head_detail
