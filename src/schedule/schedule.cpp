#include "tessera/schedule/schedule.h"

#include "tessera/core/error.h"

namespace tessera {

void Schedule::check_sampling(const std::vector<TokenGridSize>&,
                              const GenerationOptions& options) const {
  TESSERA_CHECK(options.schedule.empty(),
                "the {} schedule has no sampling options, but was given the {} schedule's", name(),
                options.schedule.kind_name());
}

Tokens Schedule::sample(const ScheduleModels& models, const at::Tensor& labels,
                        const std::vector<TokenGridSize>& grids, const GenerationOptions& options,
                        SampleRngs& rngs) {
  // The request's one check: every step of sample_impl draws through `head` without another.
  const CheckedHeadOptions head(options.guidance, options.head);
  check_models(models, grids);
  check_sampling(grids, options);
  return sample_impl(models, labels, grids, options, head, rngs);
}

}  // namespace tessera
