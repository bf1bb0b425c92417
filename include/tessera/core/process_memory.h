#pragma once
// This process's resident memory, as the kernel counts it (/proc/self/status), for measuring what
// a sampling call or a benchmark configuration costs in memory:
//
//   reset_peak_resident_bytes();                     // peak := current
//   generator.sample(labels, request);
//   int64_t peak = peak_resident_bytes();            // the call's high-water mark
//
// Linux only; elsewhere, and where /proc cannot be read, the readers return 0 and the reset
// returns false.

#include <cstdint>

namespace tessera {

int64_t resident_bytes();       ///< VmRSS: resident memory now
int64_t peak_resident_bytes();  ///< VmHWM: the most resident memory since start or the last reset
/// Hands memory that the C allocator keeps after frees back to the system (glibc's malloc_trim), so
/// that a peak measured next counts what the next work needs, not what earlier work left cached.
void release_free_memory();
/// Lowers the high-water mark to the current resident memory (writes "5" to /proc/self/clear_refs,
/// Linux 4.0 and later). False where the kernel refuses; the peak then spans the whole process.
bool reset_peak_resident_bytes();

}  // namespace tessera
