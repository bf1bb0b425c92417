#include "tessera/distributed/distributed_environment.h"

#include <cerrno>
#include <cstdlib>
#include <optional>

#include "tessera/core/error.h"

namespace tessera {

namespace {

std::optional<std::string> variable(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int64_t integer_variable(const char* name, const std::string& text, int64_t low, int64_t high) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  TESSERA_CHECK(errno == 0 && end != text.c_str() && *end == '\0',
                "environment variable {}='{}' is not an integer", name, text);
  TESSERA_CHECK(value >= low && value <= high,
                "environment variable {}={} is out of range: expected {}..{}", name, value, low,
                high);
  return value;
}

}  // namespace

DistributedEnvironment DistributedEnvironment::from_variables() {
  DistributedEnvironment environment;
  const auto world_size = variable("WORLD_SIZE");
  if (!world_size) return environment;
  environment.world_size = integer_variable("WORLD_SIZE", *world_size, 1, 1 << 20);
  if (!environment.distributed()) return environment;
  auto required = [&](const char* name) {
    const auto value = variable(name);
    TESSERA_CHECK(value.has_value(),
                  "environment variable {} is not set, but WORLD_SIZE={} says this process is one "
                  "of a data-parallel job (torchrun sets RANK, LOCAL_RANK, MASTER_ADDR and "
                  "MASTER_PORT; `tessera train --nproc N` starts the ranks itself)",
                  name, environment.world_size);
    return *value;
  };
  environment.rank = integer_variable("RANK", required("RANK"), 0, environment.world_size - 1);
  const auto local_rank = variable("LOCAL_RANK");
  environment.local_rank =
      local_rank ? integer_variable("LOCAL_RANK", *local_rank, 0, 1 << 20) : environment.rank;
  environment.master_address = required("MASTER_ADDR");
  environment.master_port = integer_variable("MASTER_PORT", required("MASTER_PORT"), 1, 65535);
  return environment;
}

}  // namespace tessera
