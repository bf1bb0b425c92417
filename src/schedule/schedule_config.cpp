#include "tessera/schedule/schedule_config.h"

#include "tessera/core/error.h"

namespace tessera {

std::unique_ptr<Schedule> make_schedule(const ScheduleConfig& config) {
  switch (config.kind) {
    case ScheduleKind::raster:
      return std::make_unique<RasterSchedule>(config.raster);
    case ScheduleKind::maskgit:
      return std::make_unique<MaskGitSchedule>(config.maskgit);
    case ScheduleKind::mar:
      return std::make_unique<MarSchedule>(config.mar);
    case ScheduleKind::next_scale:
      return std::make_unique<NextScaleSchedule>(config.next_scale);
    case ScheduleKind::hmar:
      return std::make_unique<HmarSchedule>(config.hmar);
    case ScheduleKind::hi_mar:
      return std::make_unique<HiMarSchedule>(config.hi_mar);
    case ScheduleKind::continuous_next_scale:
      return std::make_unique<ContinuousNextScaleSchedule>(config.continuous_next_scale);
  }
  TESSERA_CHECK(false, "make_schedule: unknown schedule kind {}", static_cast<int>(config.kind));
  return nullptr;
}

}  // namespace tessera
