#pragma once
// Keeping freed heap memory for reuse, so that sampling does not page-fault on every step.
//
// Note [Heap reuse]
// Sampling allocates and frees the same activations (0.1 to 40 MB each) at every step of every
// batch. glibc's malloc, by default, serves a request of 128 KiB or more (a threshold it raises
// on its own, up to 32 MiB, as large blocks are freed) with a fresh mmap and unmaps it on free,
// and gives the top of the heap back to the kernel once more than twice that threshold is free.
// Either way the next step's tensors land on pages the kernel must fault in and zero again: in
// `tessera sample` on one thread (beside a training run), 686,000 page faults for 100 raster
// samples and 59.7 ms per image, against 79,000 and 33.5 ms with the settings below
// (docs/performance.md, "Sampling: KV-cache reads and heap reuse").
//
// keep_freed_heap_memory() sets the thresholds to glibc's largest mmap threshold (32 MiB: larger
// blocks still come from mmap, so a huge one-off tensor is still given back) and a large trim
// threshold and top pad, so freed memory stays in the heap for the next step. The process keeps
// its peak heap instead of shrinking after a peak: a price worth paying in a sampling or training
// process, not necessarily in a host application with other phases, so the library never calls
// this on its own; the `tessera` command does.
//
// The settings are process-wide. They are left alone (and the call returns false) when
// GLIBC_TUNABLES already sets any glibc.malloc tunable, since the user chose those, where the
// C library is not glibc, and in sanitizer builds (whose allocator replaces malloc).

namespace tessera {

struct HeapReuseReport {
  /// Whether malloc's settings were changed.
  bool applied = false;
  /// Why not, when not applied.
  const char* reason = "";
};  ///< What keep_freed_heap_memory() did, and why not when it changed nothing.

/// Make malloc keep freed memory for reuse (Note [Heap reuse]). Process-wide; call early, from the
/// main thread, before heavy allocation.
HeapReuseReport keep_freed_heap_memory();

}  // namespace tessera
