// The Head base: parameters, state dict and persistence over the head's torch::nn module, and the
// factory.

#include "tessera/head/head.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <string>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"
#include "tessera/core/phase_profile.h"
#include "tessera/io/safetensors.h"
#include "tessera/head/diffusion_head.h"
#include "tessera/head/discrete_head.h"
#include "tessera/head/flow_matching_head.h"

namespace tessera {
namespace {

constexpr const char* kConfigMetadataKey = "tessera.head_config";

std::string list_names(const std::vector<std::string>& names) {
  constexpr size_t kShown = 8;
  std::string text;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) text += (i == 0 ? "" : ", ") + names[i];
  if (names.size() > kShown) text += fmt::format(", ... ({} in all)", names.size());
  return text.empty() ? std::string("none") : text;
}

}  // namespace

Head::Head(std::shared_ptr<torch::nn::Module> module) : module_(std::move(module)) {
  TESSERA_CHECK(module_ != nullptr, "Head: no module");
}

Head::~Head() = default;

HeadSample Head::sample(const at::Tensor& hidden, const Guidance& guidance,
                        const HeadSamplingOptions& options, SampleRngs& rngs,
                        const HeadStep& step) {
  return CheckedHeadOptions(guidance, options).draw(*this, hidden, rngs, step);
}

CheckedHeadOptions::CheckedHeadOptions(const Guidance& guidance,
                                       const HeadSamplingOptions& options)
    : guidance_(guidance), options_(options) {
  options_.validate();
  guidance_.validate();
}

CheckedHeadOptions CheckedHeadOptions::unguided() const {
  return CheckedHeadOptions(Checked{}, Guidance::none(), options_);
}

HeadSample CheckedHeadOptions::draw(Head& head, const at::Tensor& hidden, SampleRngs& rngs,
                                    const HeadStep& step) const {
  const PhaseScope phase(Phase::head);
  return head.sample_impl(hidden, guidance_, options_, rngs, step);
}

std::vector<at::Tensor> Head::parameters() const { return module_->parameters(); }

std::map<std::string, at::Tensor> Head::state_dict() const {
  std::map<std::string, at::Tensor> state;
  for (const auto& item : module_->named_parameters()) state.emplace(item.key(), item.value());
  for (const auto& item : module_->named_buffers()) state.emplace(item.key(), item.value());
  return state;
}

void Head::load_state_dict(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, at::Tensor> targets = state_dict();
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (!it->second.defined() || it->second.sizes() != target.sizes() ||
               !at::isFloatingType(it->second.scalar_type())) {
      mismatched.push_back(fmt::format(
          "{} (expected floating point {}, got {})", name, target.sizes(),
          it->second.defined()
              ? fmt::format("{} {}", it->second.scalar_type(), it->second.sizes())
              : std::string("undefined")));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!targets.contains(name)) unexpected.push_back(name);
  }
  TESSERA_CHECK(missing.empty() && unexpected.empty() && mismatched.empty(),
                "head: the state dict does not match the head: missing keys: {}; unexpected keys: "
                "{}; mismatches: {}",
                list_names(missing), list_names(unexpected), list_names(mismatched));
  at::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(tensors.at(name));
}

void Head::save(const std::filesystem::path& path) const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, tensor] : state_dict()) tensors.emplace(name, tensor.detach());
  save_safetensors(path, tensors, {{kConfigMetadataKey, config_to_json(config()).dump()}});
}

void Head::load(const std::filesystem::path& path) { load_state_dict(load_safetensors(path)); }

void Head::set_training(bool training) { module_->train(training); }

bool Head::is_training() const { return module_->is_training(); }

void Head::to(at::Device device) { module_->to(device); }

at::Device Head::device() const {
  for (const auto& p : module_->parameters()) return p.device();
  for (const auto& b : module_->buffers()) return b.device();
  return at::kCPU;
}

std::unique_ptr<Head> make_head(const HeadConfig& config, uint64_t seed) {
  config.validate();
  switch (config.kind) {
    case HeadKind::discrete:
      return std::make_unique<DiscreteHead>(config.discrete, seed);
    case HeadKind::diffusion:
      return std::make_unique<DiffusionHead>(config.diffusion, seed);
    case HeadKind::flow_matching:
      return std::make_unique<FlowMatchingHead>(config.flow_matching, seed);
  }
  TESSERA_FAIL("make_head: unknown head kind {}", static_cast<int>(config.kind));
}

std::unique_ptr<Head> load_head(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  auto it = file.metadata().find(kConfigMetadataKey);
  TESSERA_CHECK(it != file.metadata().end(),
                "load_head: {} has no '{}' metadata (not written by Head::save); build the head "
                "from its config and call Head::load instead",
                path.string(), kConfigMetadataKey);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("load_head: {}: the '{}' metadata is not valid JSON: {}", path.string(),
                 kConfigMetadataKey, e.what());
  }
  std::unique_ptr<Head> head = make_head(config_from_json<HeadConfig>(json, "head_config"));
  head->load_state_dict(file.all());
  return head;
}

}  // namespace tessera
