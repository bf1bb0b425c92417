#include "tessera/schedule/schedule_sampling.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace tessera {

void MaskGitSamplingOptions::validate() const {
  TESSERA_CHECK(steps >= 1, "maskgit schedule: steps must be >= 1, got {}", steps);
  TESSERA_CHECK(choice_temperature >= 0,
                "maskgit schedule: choice_temperature must be >= 0, got {}", choice_temperature);
}

void MarSamplingOptions::validate() const {
  TESSERA_CHECK(steps >= 1, "mar schedule: steps must be >= 1, got {}", steps);
}

void HmarSamplingOptions::validate() const {
  for (size_t s = 0; s < refinement_steps.size(); ++s)
    TESSERA_CHECK(refinement_steps[s] >= 0, "hmar: refinement_steps[{}] must be >= 0, got {}", s,
                  refinement_steps[s]);
  TESSERA_CHECK(mask_schedule.empty() || refinement_steps.empty(),
                "hmar: give refinement steps either as refinement_steps or as mask_schedule, not "
                "both");
  for (size_t s = 0; s < mask_schedule.size(); ++s) {
    TESSERA_CHECK(!mask_schedule[s].empty(),
                  "hmar: mask_schedule[{}] is empty (it needs at least the next-scale pass)", s);
    for (int64_t count : mask_schedule[s])
      TESSERA_CHECK(count >= 1,
                    "hmar: mask_schedule[{}] = [{}]: every step must commit at least one token", s,
                    fmt::join(mask_schedule[s], ", "));
  }
}

void HiMarSamplingOptions::validate() const {
  TESSERA_CHECK(pivot_steps >= 1 && dense_steps >= 1,
                "hi_mar schedule: pivot_steps and dense_steps must be >= 1, got {} and {}",
                pivot_steps, dense_steps);
}

std::string ScheduleSamplingOptions::kind_name() const {
  struct Name {
    const char* operator()(const std::monostate&) const { return "none"; }
    const char* operator()(const RasterSamplingOptions&) const { return "raster"; }
    const char* operator()(const MaskGitSamplingOptions&) const { return "maskgit"; }
    const char* operator()(const MarSamplingOptions&) const { return "mar"; }
    const char* operator()(const NextScaleSamplingOptions&) const { return "next_scale"; }
    const char* operator()(const HmarSamplingOptions&) const { return "hmar"; }
    const char* operator()(const HiMarSamplingOptions&) const { return "hi_mar"; }
    const char* operator()(const ContinuousNextScaleSamplingOptions&) const {
      return "continuous_next_scale";
    }
  };
  return std::visit(Name{}, value);
}

void ScheduleSamplingOptions::validate() const {
  std::visit(
      [](const auto& options) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(options)>, std::monostate>) {
          options.validate();
        }
      },
      value);
}

}  // namespace tessera
