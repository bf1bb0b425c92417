#include "tessera/head/head_config.h"

#include "tessera/core/error.h"

namespace tessera {

void DiscreteHeadConfig::validate() const {
  TESSERA_CHECK(width >= 1, "discrete head: width must be >= 1, got {}", width);
  TESSERA_CHECK(vocab_size >= 1, "discrete head: vocab_size must be >= 1, got {}", vocab_size);
  TESSERA_CHECK(projection != DiscreteProjection::adaln || condition_width >= 1,
                "discrete head: the adaln projection needs condition_width >= 1, got {}",
                condition_width);
  TESSERA_CHECK(norm_eps > 0, "discrete head: norm_eps must be > 0, got {}", norm_eps);
  TESSERA_CHECK(label_smoothing >= 0 && label_smoothing < 1,
                "discrete head: label_smoothing must be in [0, 1), got {}", label_smoothing);
}

void AdaLnMlpConfig::validate() const {
  TESSERA_CHECK(token_channels >= 1, "AdaLN MLP: token_channels must be >= 1, got {}",
                token_channels);
  TESSERA_CHECK(hidden_width >= 1, "AdaLN MLP: hidden_width must be >= 1, got {}", hidden_width);
  TESSERA_CHECK(width >= 1, "AdaLN MLP: width must be >= 1, got {}", width);
  TESSERA_CHECK(depth >= 0, "AdaLN MLP: depth must be >= 0, got {}", depth);
  TESSERA_CHECK(frequency_embedding_size >= 2,
                "AdaLN MLP: frequency_embedding_size must be >= 2, got {}",
                frequency_embedding_size);
}

void DiffusionHeadConfig::validate() const {
  mlp.validate();
  TESSERA_CHECK(training_steps >= 2, "diffusion head: training_steps must be >= 2, got {}",
                training_steps);
  TESSERA_CHECK(batch_multiplier >= 1, "diffusion head: batch_multiplier must be >= 1, got {}",
                batch_multiplier);
}

void FlowMatchingHeadConfig::validate() const {
  mlp.validate();
  TESSERA_CHECK(batch_multiplier >= 1,
                "flow-matching head: batch_multiplier must be >= 1, got {}", batch_multiplier);
}

void HeadConfig::validate() const {
  switch (kind) {
    case HeadKind::discrete:
      discrete.validate();
      break;
    case HeadKind::diffusion:
      diffusion.validate();
      break;
    case HeadKind::flow_matching:
      flow_matching.validate();
      break;
  }
}

}  // namespace tessera
