#include "tessera/head/sampling_options.h"

#include <cmath>

#include "tessera/core/error.h"

namespace tessera {

void HeadSamplingOptions::validate() const {
  TESSERA_CHECK(std::isfinite(temperature) && temperature > 0,
                "sampling options: temperature must be > 0, got {}", temperature);
  TESSERA_CHECK(discrete.top_k >= 0, "sampling options: top_k must be >= 0 (0 = off), got {}",
                discrete.top_k);
  TESSERA_CHECK(discrete.top_p > 0 && discrete.top_p <= 1,
                "sampling options: top_p must be in (0, 1] (1 = off), got {}", discrete.top_p);
  TESSERA_CHECK(diffusion.steps >= 1, "sampling options: diffusion steps must be >= 1, got {}",
                diffusion.steps);
  TESSERA_CHECK(std::isfinite(diffusion.ddim_eta) && diffusion.ddim_eta >= 0,
                "sampling options: ddim_eta must be >= 0, got {}", diffusion.ddim_eta);
  TESSERA_CHECK(std::isfinite(diffusion.clip_x_start) && diffusion.clip_x_start >= 0,
                "sampling options: clip_x_start must be >= 0 (0 = off), got {}",
                diffusion.clip_x_start);
  TESSERA_CHECK(flow.steps >= 1, "sampling options: flow steps must be >= 1, got {}", flow.steps);
  step_annealing.validate();
}

}  // namespace tessera
