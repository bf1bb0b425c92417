// sample_bench: what one `tessera sample` call costs, phase by phase (issue 26).
//
// For each model (the published architectures var-d16 and hmar-d16 with random weights and their
// references' sampling settings, and every shipped generator in models/), each precision (fp32,
// bf16, int8: tessera/nn/inference_precision.h) and each batch size, it times Generator::sample —
// tokens and decode, what `tessera sample` runs — with warm-up calls first, and records per call:
// wall time, the split into backbone / head and sampling / tokenizer decode / rest
// (tessera/core/phase_profile.h), and the process's peak resident memory over the timed calls
// (tessera/pipeline/sampling_measurement.h). It prints a table, the growth of peak memory with the
// batch, and writes <out>/sample.json atomically with the machine (CPU name and flags).
//
// Comparing against the reference Python samplers is bench/compare_references.py, which runs this
// program and the references one configuration at a time, interleaved (docs/performance.md,
// "Sampling against the references").
//
//   build/bench/sample_bench                                   # every model, batches 1, 4, 16
//   build/bench/sample_bench --models var-d16 --batches 1 --precisions fp32,bf16 --repeat 2

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench_args.h"
#include "tessera/compat/presets.h"
#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/heap_reuse.h"
#include "tessera/core/machine.h"
#include "tessera/nn/inference_precision.h"
#include "tessera/pipeline/generator.h"
#include "tessera/pipeline/sampling_measurement.h"

namespace {

using namespace tessera;

struct Options {
  std::filesystem::path out = bench::default_out_dir();
  std::vector<std::string> models;  // empty: the defaults
  std::vector<int64_t> batches{1, 4, 16};
  std::vector<InferencePrecision> precisions{InferencePrecision::fp32};
  int64_t warmup = 1;
  int64_t repeat = 3;
  int threads = 0;  // 0: the machine's cores
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

// var-d16 and hmar-d16, then the shipped generators (models/*.safetensors but the classifier).
std::vector<std::string> default_models() {
  std::vector<std::string> models{"var-d16", "hmar-d16"};
  const std::filesystem::path dir = std::filesystem::path(TESSERA_SOURCE_DIR) / "models";
  std::vector<std::string> shipped;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".safetensors" && !name.starts_with("classifier")) {
      shipped.push_back(entry.path().string());
    }
  }
  std::sort(shipped.begin(), shipped.end());
  models.insert(models.end(), shipped.begin(), shipped.end());
  return models;
}

// A path to a generator file, or a preset's name (random weights).
Generator load_model(const std::string& model) {
  if (model.ends_with(".safetensors")) return Generator::load(model);
  return build_preset_generator(generator_preset(model), {});
}

std::string model_name(const std::string& model) {
  return model.ends_with(".safetensors") ? std::filesystem::path(model).stem().string() : model;
}

// Labels 0, 1, 2, ... modulo the classes: the same for every precision and run.
at::Tensor labels_for(int64_t batch, int64_t num_classes) {
  return at::arange(batch, at::kLong).remainder(num_classes);
}

nlohmann::ordered_json result_json(const std::string& model, InferencePrecision precision,
                                   const SamplingMeasurement& m) {
  const PhaseTimes& t = m.median_phases();
  nlohmann::ordered_json r;
  r["model"] = model;
  r["precision"] = std::string(to_string(precision));
  r["batch"] = m.batch;
  r["seconds"] = m.seconds;
  r["median_s"] = m.median_seconds();
  r["images_per_s"] = m.images_per_second();
  r["peak_rss_bytes"] = m.peak_resident_bytes;
  r["peak_rss_covers_only_the_calls"] = m.peak_covers_only_the_calls;
  r["phases_s"] = {{"backbone", t.seconds(Phase::backbone)},
                   {"head", t.seconds(Phase::head)},
                   {"decode", t.seconds(Phase::decode)},
                   {"rest", t.rest()}};
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bench::BenchArgs args(
      "sample_bench",
      "[--models A,B] [--batches 1,4,16] [--precisions fp32,bf16,int8] [--warmup N] [--repeat N] "
      "[--threads N] [--out DIR]",
      argc, argv);
  while (args.next()) {
    const std::string& flag = args.flag();
    if (flag == "--out") {
      o.out = args.value();
    } else if (flag == "--models") {
      o.models = split_commas(args.value());
    } else if (flag == "--batches") {
      o.batches.clear();
      for (const std::string& b : split_commas(args.value())) {
        try {
          o.batches.push_back(std::stoll(b));
        } catch (const std::exception&) {
          args.fail(fmt::format("--batches wants positive integers, got '{}'", b));
        }
        if (o.batches.back() < 1) args.fail(fmt::format("--batches: {} is not positive", b));
      }
    } else if (flag == "--precisions") {
      o.precisions.clear();
      for (const std::string& p : split_commas(args.value())) {
        try {
          o.precisions.push_back(parse_inference_precision(p, at::kCPU));
        } catch (const Error& e) {
          args.fail(e.what());
        }
      }
    } else if (flag == "--warmup") {
      const std::string text = args.value();
      o.warmup = text == "0" ? 0 : std::stoll(text);
    } else if (flag == "--repeat") {
      o.repeat = args.positive_value();
    } else if (flag == "--threads") {
      o.threads = args.positive_value();
    } else {
      args.unknown();
    }
  }
  if (o.batches.empty() || o.precisions.empty()) args.fail("--batches and --precisions need values");
  if (o.models.empty()) o.models = default_models();
  if (o.threads > 0) at::set_num_threads(o.threads);
  (void)keep_freed_heap_memory();  // as the tessera command does (Note [Heap reuse])

  try {
    const MachineDescription machine = describe_machine();
    std::printf("sample_bench: %s, %lld threads, warm-up %lld, %lld timed calls per configuration\n",
                machine.cpu.c_str(), static_cast<long long>(machine.threads),
                static_cast<long long>(o.warmup), static_cast<long long>(o.repeat));
    std::printf("%-28s %-5s %5s %9s %9s %8s %8s %8s %8s %8s %9s\n", "model", "prec", "batch",
                "s/call", "images/s", "backbone", "head", "decode", "rest", "peak GB", "growth GB");
    nlohmann::ordered_json results = nlohmann::ordered_json::array();
    for (const std::string& model : o.models) {
      Generator generator = load_model(model);
      const std::string name = model_name(model);
      for (const InferencePrecision precision : o.precisions) {
        // Conversion rounds the weights; fp32 comes first (Options' order) or from a fresh load.
        if (precision != generator.precision()) {
          if (generator.precision() != InferencePrecision::fp32) generator = load_model(model);
          generator.set_precision(precision);
        }
        int64_t first_peak = 0;
        for (const int64_t batch : o.batches) {
          const SamplingMeasurement m =
              measure_sampling(generator, labels_for(batch, generator.num_classes()), {.seed = 0},
                               {.warmup = o.warmup, .repeat = o.repeat});
          const PhaseTimes& t = m.median_phases();
          if (first_peak == 0) first_peak = m.peak_resident_bytes;
          std::printf("%-28s %-5s %5lld %9.3f %9.3f %8.3f %8.3f %8.3f %8.3f %8.2f %+9.2f\n",
                      name.c_str(), std::string(to_string(precision)).c_str(),
                      static_cast<long long>(batch), m.median_seconds(), m.images_per_second(),
                      t.seconds(Phase::backbone), t.seconds(Phase::head), t.seconds(Phase::decode),
                      t.rest(), static_cast<double>(m.peak_resident_bytes) / 1e9,
                      static_cast<double>(m.peak_resident_bytes - first_peak) / 1e9);
          std::fflush(stdout);
          results.push_back(result_json(name, precision, m));
        }
      }
    }
    nlohmann::ordered_json doc;
    doc["machine"] = machine_json(machine);
    doc["warmup"] = o.warmup;
    doc["repeat"] = o.repeat;
    doc["results"] = results;
    std::filesystem::create_directories(o.out);
    const std::filesystem::path path = o.out / "sample.json";
    write_file_atomically(path, doc.dump(2) + "\n");
    std::printf("wrote %s\n", path.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sample_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
