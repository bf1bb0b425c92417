#include "tessera/tokenizer/tokenizer_checkpoint.h"

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/io/safetensors.h"
#include "tessera/tokenizer/kl_vae.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"
#include "tessera/tokenizer/patch_tokenizer.h"
#include "tessera/tokenizer/vq_vae.h"

namespace tessera {

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config, uint64_t seed) {
  config.validate();
  switch (config.kind) {
    case TokenizerKind::vq_vae:
      return std::make_unique<VqVae>(config.vq_vae_or_default(), seed);
    case TokenizerKind::multiscale_vq_vae:
      return std::make_unique<MultiScaleVqVae>(config.multiscale_vq_vae_or_default(), seed);
    case TokenizerKind::kl_vae:
      return std::make_unique<KlVae>(config.kl_vae_or_default(), seed);
    case TokenizerKind::patch:
      return std::make_unique<PatchTokenizer>(config.patch_or_default());
  }
  TESSERA_FAIL("make_tokenizer: unknown tokenizer kind {}", static_cast<int>(config.kind));
}

void save_tokenizer_checkpoint(const std::filesystem::path& path, const Tokenizer& tokenizer,
                               const std::map<std::string, std::string>& extra_metadata) {
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata[kTokenizerConfigMetadataKey] = config_to_json(tokenizer.config()).dump();
  save_safetensors(path, tokenizer.state_dict(), metadata);
}

std::unique_ptr<Tokenizer> load_tokenizer_checkpoint(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto it = file.metadata().find(kTokenizerConfigMetadataKey);
  TESSERA_CHECK(it != file.metadata().end(),
                "{}: not a Tessera tokenizer checkpoint (no '{}' in __metadata__); a VAR vae "
                "checkpoint loads with tessera::load_var_vae (tessera/compat/var_vae.h)",
                path.string(), kTokenizerConfigMetadataKey);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_FAIL("{}: '{}' is not valid JSON: {}", path.string(), kTokenizerConfigMetadataKey,
                 e.what());
  }
  const auto config = config_from_json<TokenizerConfig>(json, "tokenizer");
  auto tokenizer = make_tokenizer(config);
  tokenizer->load_state_dict(file.all());
  return tokenizer;
}

}  // namespace tessera
