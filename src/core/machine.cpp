#include "tessera/core/machine.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <array>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

namespace tessera {

namespace {

// The extensions that change which kernels run, in the order they are listed.
constexpr std::array<std::string_view, 14> kKernelFlags = {
    "sse4_2",   "avx",         "avx2",        "fma",      "f16c",     "avx512f",  "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"};

std::string trimmed(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t");
  const size_t last = text.find_last_not_of(" \t\r\n");
  return first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
}

}  // namespace

MachineDescription describe_machine() {
  MachineDescription machine;
  machine.cpu = "unknown";
  machine.threads = at::get_num_threads();
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::string> flags;
  std::string line;
  bool first_processor_read = false;
  std::string family, model, stepping;
  while (std::getline(cpuinfo, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trimmed(line.substr(0, colon));
    const std::string value = trimmed(line.substr(colon + 1));
    if (key == "processor") {
      ++machine.logical_cpus;
      continue;
    }
    if (first_processor_read) continue;  // the first processor speaks for all
    if (key == "model name") {
      machine.cpu = value;
    } else if (key == "cpu family") {
      family = value;
    } else if (key == "model") {
      model = value;
    } else if (key == "stepping") {
      stepping = value;
    } else if (key == "flags") {
      std::istringstream words(value);
      for (std::string word; words >> word;) flags.insert(word);
      first_processor_read = true;
    }
  }
  if (!family.empty() && !model.empty()) {
    machine.cpu_model = fmt::format("family {} model {} stepping {}", family, model,
                                    stepping.empty() ? "?" : stepping);
  }
  for (const std::string_view flag : kKernelFlags) {
    if (flags.contains(std::string(flag))) machine.cpu_flags.emplace_back(flag);
  }
  return machine;
}

bool cpu_has_any_flag(std::initializer_list<std::string_view> flags) {
  static const std::vector<std::string> present = describe_machine().cpu_flags;
  for (const std::string_view flag : flags) {
    for (const std::string& have : present) {
      if (have == flag) return true;
    }
  }
  return false;
}

nlohmann::ordered_json machine_json(const MachineDescription& machine) {
  nlohmann::ordered_json json;
  json["cpu"] = machine.cpu;
  json["cpu_model"] = machine.cpu_model;
  json["cpu_flags"] = fmt::format("{}", fmt::join(machine.cpu_flags, " "));
  json["logical_cpus"] = machine.logical_cpus;
  json["threads"] = machine.threads;
  return json;
}

}  // namespace tessera
