#include "tessera/core/process_memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <fstream>
#include <sstream>
#include <string>

namespace tessera {

namespace {

// The "<field>:   1234 kB" line of /proc/self/status, in bytes; 0 when absent.
int64_t status_field_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream rest(line.substr(field.size() + 1));
    int64_t kib = 0;
    rest >> kib;
    return kib * 1024;
  }
  return 0;
}

}  // namespace

int64_t resident_bytes() { return status_field_bytes("VmRSS"); }

int64_t peak_resident_bytes() { return status_field_bytes("VmHWM"); }

void release_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

bool reset_peak_resident_bytes() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  if (!clear_refs) return false;
  clear_refs << "5";
  clear_refs.flush();
  return static_cast<bool>(clear_refs);
}

}  // namespace tessera
