#pragma once
// What a measurement ran on. Speed and, below the last bit, floating-point results depend on the
// CPU: LibTorch and MKL pick other kernels on an AVX2-only machine than on one with AVX-512 or
// AMX, and the machines this project is measured on differ in exactly that. Every results file
// (`tessera demo`, `tessera eval`, the programs in bench/) records this description beside its
// figures, and the quality check compares samples bit for bit only on the CPU they were recorded
// on (docs/evaluation.md, "The quality check").

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

struct MachineDescription {
  std::string cpu;  ///< the CPU's "model name" (/proc/cpuinfo); "unknown" where it cannot be read
  /// "family F model M stepping S" (/proc/cpuinfo): virtual machines often show only a generic
  /// name ("Intel(R) Xeon(R) Processor"), which this tells apart. Empty where unknown.
  std::string cpu_model;
  /// The instruction-set extensions that select LibTorch's and MKL's kernels (AVX2, FMA,
  /// AVX-512 and its VNNI/BF16 parts, AMX) which the CPU has, in a fixed order.
  std::vector<std::string> cpu_flags;
  int64_t logical_cpus = 0;  ///< processors the OS shows (0 when unknown)
  int64_t threads = 0;       ///< LibTorch's intra-op threads when described
};                           ///< The CPU and thread count behind a measurement.

/// This machine, now (the thread count is at::get_num_threads() at the call).
MachineDescription describe_machine();

/// Whether this CPU has at least one of `flags`, among the extensions MachineDescription lists
/// (read once per process): cpu_has_any_flag({"avx512_vnni", "avx_vnni"}).
bool cpu_has_any_flag(std::initializer_list<std::string_view> flags);

/// {"cpu": …, "cpu_model": …, "cpu_flags": "avx2 fma …", "logical_cpus": …, "threads": …}.
nlohmann::ordered_json machine_json(const MachineDescription& machine);

}  // namespace tessera
