#include "tessera/core/heap_reuse.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace tessera {

HeapReuseReport keep_freed_heap_memory() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return {false, "a sanitizer's allocator serves malloc in this build"};
#elif defined(__GLIBC__)
  if (const char* tunables = std::getenv("GLIBC_TUNABLES");
      tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) {
    return {false, "GLIBC_TUNABLES sets malloc tunables; they are kept"};
  }
  // glibc's ceiling for the mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): mallopt refuses
  // anything larger.
  constexpr int kMmapThreshold = 32 * 1024 * 1024;
  constexpr int kTrimThreshold = 1024 * 1024 * 1024;
  constexpr int kTopPad = 64 * 1024 * 1024;
  // Setting any of these also turns off glibc's dynamic threshold adjustment, which is what we
  // want: the thresholds stay where they are put.
  const bool ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 &&
                  mallopt(M_TOP_PAD, kTopPad) == 1;
  if (!ok) return {false, "mallopt refused the settings"};
  return {true, ""};
#else
  return {false, "not glibc: the C library's own policy is kept"};
#endif
}

}  // namespace tessera
