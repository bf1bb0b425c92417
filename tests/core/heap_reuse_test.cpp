// keep_freed_heap_memory: after it, a step that allocates, touches and frees the same blocks
// again stops costing page faults (Note [Heap reuse]).
#include "tessera/core/heap_reuse.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace tessera {
namespace {

int64_t minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

constexpr size_t kBlockBytes = size_t{3} << 20;

// One "sampling step", allocated the way c10's CPU allocator does (posix_memalign, 64-byte
// alignment): 30 activations of 3 MB alive at once (90 MB, more than glibc's default trim
// threshold can ever reach: at most twice its 32 MiB mmap ceiling), written, then all freed.
void allocate_touch_free() {
  std::vector<void*> activations;
  for (int i = 0; i < 30; ++i) {
    void* block = nullptr;
    ASSERT_EQ(posix_memalign(&block, 64, kBlockBytes), 0);
    std::memset(block, i, kBlockBytes);
    activations.push_back(block);
  }
  for (void* block : activations) std::free(block);
}

constexpr int64_t kPageBytes = 4096;
constexpr int64_t kPagesPerStep = 30 * static_cast<int64_t>(kBlockBytes) / kPageBytes;

TEST(HeapReuse, RepeatedStepsReuseTheHeapInsteadOfFaultingItIn) {
  const HeapReuseReport report = keep_freed_heap_memory();
  if (!report.applied) GTEST_SKIP() << "heap settings not applied: " << report.reason;
  // A block at glibc's mmap ceiling, freed, takes its dynamic thresholds to their maximum (mmap
  // threshold 32 MiB, trim threshold 64 MiB), the state a long sampling run reaches; without the
  // settings a step's 90 MB would then still be trimmed each time.
  {
    void* ceiling = nullptr;
    ASSERT_EQ(posix_memalign(&ceiling, 64, size_t{32} << 20), 0);
    std::memset(ceiling, 0, size_t{32} << 20);
    std::free(ceiling);
  }
  // The first steps grow the heap and settle its fragmentation: their faults are expected.
  for (int step = 0; step < 3; ++step) allocate_touch_free();
  const int64_t before = minor_page_faults();
  constexpr int kSteps = 10;
  for (int step = 0; step < kSteps; ++step) allocate_touch_free();
  const int64_t faults = minor_page_faults() - before;
  // Without the settings every step faults its 23,040 pages in again (glibc trims the freed top
  // of the heap). Allow 10 % of them for whatever else the process touches and for pages the
  // kernel takes back under memory pressure: with `make test` running the quality check beside
  // it, 2.3 % were seen (5,376 of 230,400).
  EXPECT_LT(faults, kSteps * kPagesPerStep / 10) << faults << " minor page faults over " << kSteps
                                                 << " steps of " << kPagesPerStep << " pages";
}

TEST(HeapReuse, UserMallocTunablesAreKept) {
  const char* previous = std::getenv("GLIBC_TUNABLES");
  const std::string saved = previous != nullptr ? previous : "";
  ASSERT_EQ(setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000", 1), 0);
  const HeapReuseReport report = keep_freed_heap_memory();
  if (previous != nullptr) {
    setenv("GLIBC_TUNABLES", saved.c_str(), 1);
  } else {
    unsetenv("GLIBC_TUNABLES");
  }
  EXPECT_FALSE(report.applied);
  if (std::string(report.reason).find("sanitizer") != std::string::npos) {
    GTEST_SKIP() << report.reason;
  }
  EXPECT_NE(std::string(report.reason).find("GLIBC_TUNABLES"), std::string::npos) << report.reason;
}

}  // namespace
}  // namespace tessera
