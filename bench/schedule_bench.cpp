// schedule_bench: sampling time and memory of the generation schedules at one resolution
// (issue 7).
//
// Every case generates the tokens of a 16x16 latent (tokens only: the tokenizer's decoder is not
// run): the next-scale family over VAR-16's pyramid (680 tokens ending at 16x16), the flat
// schedules (raster, MaskGIT, MAR, Hi-MAR) over the 256 tokens of the 16x16 grid, all with the
// same randomly initialised backbone size and classifier-free guidance (a doubled batch). For
// each case it samples a batch of images, interleaved round-robin with the other cases, and reports the median wall time per call and per image, the backbone
// evaluations per call, the KV cache's bytes (KVCache::memory_bytes of the cache the schedule
// builds) and the peak of CPU memory allocated during the call beyond what was allocated before
// it (see Note [Measuring peak memory]); activations = peak − KV cache. It prints a table and
// writes <out>/schedules.json atomically. See docs/performance.md ("Schedules").
//
// Adding a schedule is one function: write a `ScheduleCase make_<name>_case(const BenchSetup&)`
// that builds its models and options, and list it in kCases.
//
// Note [Measuring peak memory]
// LibTorch's CPU allocator keeps no statistics, so the program installs a counting allocator
// (c10::SetCPUAllocator) that forwards to the default one and records the bytes live and their
// peak. Every CPU tensor allocated after start-up goes through it (parameters, the KV cache,
// activations, the head's logits, f̂), so peak − live-before-the-call is exactly what one
// sampling call added at its worst moment; freed memory that the system allocator keeps is not
// counted (it is reusable), nor are allocations made outside ATen (oneDNN scratch, OpenMP).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_args.h"
#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/machine.h"
#include "tessera/core/rng.h"
#include "tessera/head/head.h"
#include "tessera/nn/backbone.h"
#include "tessera/schedule/continuous_next_scale_schedule.h"
#include "tessera/schedule/hi_mar_schedule.h"
#include "tessera/schedule/hmar_schedule.h"
#include "tessera/schedule/mar_schedule.h"
#include "tessera/schedule/maskgit_schedule.h"
#include "tessera/schedule/next_scale_schedule.h"
#include "tessera/schedule/raster_schedule.h"
#include "tessera/tokenizer/multiscale_vq_vae.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace tessera;

// ---------------------------------------------------------------------------------------------
// The counting allocator (Note [Measuring peak memory])

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    if (data == nullptr) return inner;
    // The default allocator's pointers are simple (context == data, one deleter); keep them
    // simple so that raw_allocate() keeps working, and remember size and deleter per pointer.
    TESSERA_CHECK(inner.get_context() == data, "schedule_bench: the CPU allocator is not simple");
    c10::DeleterFnPtr deleter = inner.get_deleter();
    (void)inner.release_context();
    {
      std::lock_guard<std::mutex> lock(instance_mutex());
      live_[data] = {n, deleter};
      current_ += static_cast<int64_t>(n);
      peak_ = std::max(peak_, current_);
    }
    return {data, data, &CountingAllocator::free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingAllocator::free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t current() {
    std::lock_guard<std::mutex> lock(instance_mutex());
    return current_;
  }
  int64_t peak() {
    std::lock_guard<std::mutex> lock(instance_mutex());
    return peak_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(instance_mutex());
    peak_ = current_;
  }

  static CountingAllocator* instance;

 private:
  static std::mutex& instance_mutex() {
    static std::mutex m;
    return m;
  }
  static void free(void* data) {
    CountingAllocator* self = instance;
    c10::DeleterFnPtr deleter = nullptr;
    {
      std::lock_guard<std::mutex> lock(instance_mutex());
      auto it = self->live_.find(data);
      if (it == self->live_.end()) return;  // not ours: cannot happen, never free blindly
      self->current_ -= static_cast<int64_t>(it->second.first);
      deleter = it->second.second;
      self->live_.erase(it);
    }
    if (deleter != nullptr) deleter(data);
  }

  c10::Allocator* base_;
  std::unordered_map<void*, std::pair<size_t, c10::DeleterFnPtr>> live_;
  int64_t current_ = 0, peak_ = 0;
};

CountingAllocator* CountingAllocator::instance = nullptr;

void install_counting_allocator() {
  static CountingAllocator allocator(c10::GetCPUAllocator());
  CountingAllocator::instance = &allocator;
  c10::SetCPUAllocator(&allocator, /*priority=*/100);
}

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  std::filesystem::path out;
  int runs = 5;
  bool quick = false;
  std::string only;  // run only the cases whose name contains this
  int threads = 0;
  int64_t batch = 4;
};

Options parse_options(int argc, char** argv) {
  Options o;
  o.out = tessera::bench::default_out_dir();
  bool runs_given = false, batch_given = false;
  tessera::bench::BenchArgs args("schedule_bench", "[--out DIR] [--runs N] [--batch N] [--quick] [--threads N] [--only TEXT]",
                        argc, argv);
  while (args.next()) {
    const std::string& arg = args.flag();
    if (arg == "--out") {
      o.out = args.value();
    } else if (arg == "--runs") {
      o.runs = args.positive_value();
      runs_given = true;
    } else if (arg == "--batch") {
      o.batch = args.positive_value();
      batch_given = true;
    } else if (arg == "--quick") {
      o.quick = true;
    } else if (arg == "--only") {
      o.only = args.value();
    } else if (arg == "--threads") {
      o.threads = args.positive_value();
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "schedule_bench: sampling time and memory of the schedules (16x16 latent)\n"
          "  --out DIR     where schedules.json goes (default %s)\n"
          "  --runs N      timed calls per case, median reported (default 5; 2 with --quick)\n"
          "  --batch N     images per sampling call (default 4; 1 with --quick)\n"
          "  --quick       a smoke test\n"
          "  --only TEXT   only the cases whose name contains TEXT (e.g. 'mar')\n"
          "  --threads N   intra-op threads (default: LibTorch's)\n",
          o.out.string().c_str());
      std::exit(0);
    } else {
      args.unknown();
    }
  }
  if (o.quick && !runs_given) o.runs = 2;
  if (o.quick && !batch_given) o.batch = 1;
  return o;
}

// ---------------------------------------------------------------------------------------------
// The cases

// VAR-16's pyramid (680 tokens) and codebook; a small backbone so that a call takes seconds on
// two cores. Every case uses these sizes so that their figures compare. The continuous schedules
// (MAR, Hi-MAR) take MAR's KL-16 tokens (16 channels) and a head MLP as wide as the backbone.
constexpr int64_t kWidth = 256, kDepth = 4, kHeads = 4, kCvae = 32, kVocab = 4096, kClasses = 10;
constexpr int64_t kGrid = 16, kContinuousChannels = 16, kHeadDepth = 3, kBuffer = 64;
const std::vector<int64_t> kPatchNums = {1, 2, 3, 4, 5, 6, 8, 10, 13, 16};
constexpr double kCfg = 1.5;

struct BenchSetup {
  int64_t batch = 1;
  // A tokenizer with VAR-16's quantiser (the sampler reads its codebook, Phi and f̂) and a minimal
  // autoencoder (the decoder is not run).
  std::shared_ptr<MultiScaleVqVae> multiscale;
};

struct ScheduleCase {
  std::string name;
  std::string note;
  std::unique_ptr<Schedule> schedule;
  std::unique_ptr<Backbone> backbone;
  std::unique_ptr<Backbone> decoder;  // MAR's encoder–decoder split only
  std::unique_ptr<Head> head;
  Tokenizer* tokenizer = nullptr;
  std::vector<TokenGridSize> grids;
  GenerationOptions options;
  at::Tensor labels;
  int64_t kv_cache_bytes = 0;  // the cache the schedule allocates (0: none)
  ScheduleModels models() { return {*backbone, *head, tokenizer, decoder.get()}; }
};

HeadConfig var_head(int64_t width, int64_t vocab) {
  HeadConfig h;
  h.kind = HeadKind::discrete;
  h.discrete.width = width;
  h.discrete.vocab_size = vocab;
  h.discrete.projection = DiscreteProjection::adaln;
  h.discrete.condition_width = width;
  return h;
}

ScheduleCase next_scale_family_case(const BenchSetup& setup, std::unique_ptr<Schedule> schedule,
                                    int64_t extra_channels) {
  ScheduleCase c;
  c.schedule = std::move(schedule);
  c.backbone = std::make_unique<Backbone>(
      var_style_config(kWidth, kDepth, kHeads, kPatchNums, kCvae + extra_channels, kClasses), 1);
  c.backbone->set_training(false);
  c.head = make_head(var_head(kWidth, kVocab), 2);
  c.head->set_training(false);
  c.tokenizer = setup.multiscale.get();
  c.grids = setup.multiscale->token_grids(16 * setup.multiscale->downsampling_factor(),
                                          16 * setup.multiscale->downsampling_factor());
  c.options.guidance = Guidance::var_scale_ramp(kCfg);
  c.labels = at::arange(setup.batch, at::kLong).remainder(kClasses);
  return c;
}

int64_t guided_cache_bytes(const Backbone& backbone, int64_t batch) {
  return backbone.make_kv_cache(2 * batch, backbone.max_length()).memory_bytes();
}

ScheduleCase make_var_case(const BenchSetup& setup) {
  ScheduleCase c = next_scale_family_case(setup, std::make_unique<NextScaleSchedule>(), 0);
  c.name = "next_scale (VAR)";
  c.note = "block-causal, KV cache, one call per scale";
  c.kv_cache_bytes = guided_cache_bytes(*c.backbone, setup.batch);
  return c;
}

ScheduleCase make_var_no_cache_case(const BenchSetup& setup) {
  NextScaleScheduleConfig config;
  config.sampling.use_kv_cache = false;
  ScheduleCase c =
      next_scale_family_case(setup, std::make_unique<NextScaleSchedule>(config), 0);
  c.name = "next_scale, no cache";
  c.note = "block-causal, the prefix recomputed at every scale";
  return c;
}

ScheduleCase make_hmar_case(const BenchSetup& setup) {
  ScheduleCase c = next_scale_family_case(setup, std::make_unique<HmarSchedule>(), 0);
  c.name = "hmar";
  c.note = "block-diagonal, no cache, one call per scale over its rows";
  return c;
}

ScheduleCase make_hmar_refined_case(const BenchSetup& setup) {
  HmarScheduleConfig config;
  config.sampling.refinement_steps = {0, 1, 2, 2, 2, 2, 2, 2, 2, 2};  // 17 extra unguided calls
  ScheduleCase c = next_scale_family_case(setup, std::make_unique<HmarSchedule>(config), 1);
  c.name = "hmar + refinement";
  c.note = "refinement_steps 0,1,2,...,2 (unguided), indicator channel";
  return c;
}

// --- the flat schedules, over the 16x16 grid -------------------------------------------------

ScheduleCase flat_case(const BenchSetup& setup, std::unique_ptr<Schedule> schedule,
                       const BackboneConfig& backbone, const HeadConfig& head,
                       const Guidance& guidance) {
  ScheduleCase c;
  c.schedule = std::move(schedule);
  c.backbone = std::make_unique<Backbone>(backbone, 1);
  c.backbone->set_training(false);
  c.head = make_head(head, 2);
  c.head->set_training(false);
  c.grids = {TokenGridSize{kGrid, kGrid}};
  c.options.guidance = guidance;
  c.labels = at::arange(setup.batch, at::kLong).remainder(kClasses);
  return c;
}

ScheduleCase make_raster_case(const BenchSetup& setup) {
  HeadConfig head;
  head.kind = HeadKind::discrete;
  head.discrete.width = kWidth;
  head.discrete.vocab_size = kVocab;
  head.discrete.bias = false;
  ScheduleCase c = flat_case(
      setup, std::make_unique<RasterSchedule>(),
      llamagen_style_config(kWidth, kDepth, kHeads, kGrid, kVocab, kClasses), head,
      Guidance::constant(kCfg));
  c.name = "raster (LlamaGen)";
  c.note = "causal, KV cache, one row per call";
  c.kv_cache_bytes = guided_cache_bytes(*c.backbone, setup.batch);
  return c;
}

ScheduleCase make_maskgit_case(const BenchSetup& setup) {
  HeadConfig head;
  head.kind = HeadKind::discrete;
  head.discrete.width = kWidth;
  head.discrete.vocab_size = kVocab;
  ScheduleCase c = flat_case(
      setup, std::make_unique<MaskGitSchedule>(),
      maskgit_style_config(kWidth, kDepth, kHeads, kGrid * kGrid, kVocab + 1, kClasses), head,
      Guidance::constant(kCfg));
  c.name = "maskgit";
  c.note = fmt::format("bidirectional, {} steps over every row",
                       MaskGitScheduleConfig{}.sampling.steps);
  return c;
}

HeadConfig continuous_head(HeadKind kind) {
  HeadConfig head;
  head.kind = kind;
  AdaLnMlpConfig mlp;
  mlp.token_channels = kContinuousChannels;
  mlp.hidden_width = kWidth;
  mlp.width = kWidth;
  mlp.depth = kHeadDepth;
  head.diffusion.mlp = mlp;
  head.flow_matching.mlp = mlp;
  return head;
}

ScheduleCase mar_case(const BenchSetup& setup, HeadKind kind) {
  ScheduleCase c = flat_case(setup, std::make_unique<MarSchedule>(),
                             mar_style_config(kWidth, kDepth, kHeads, kGrid * kGrid,
                                              kContinuousChannels + 1, kClasses, kBuffer),
                             continuous_head(kind), Guidance::mar_token_ramp(kCfg));
  return c;
}

// The heads' default sampling steps (MAR: DDPM respaced to 100; flow: 50 Euler steps).
ScheduleCase make_mar_diffusion_case(const BenchSetup& setup) {
  ScheduleCase c = mar_case(setup, HeadKind::diffusion);
  c.name = "mar + diffusion";
  c.note = fmt::format("bidirectional, {} steps; DDPM {} steps on the predicted rows",
                       MarScheduleConfig{}.sampling.steps, c.options.head.diffusion.steps);
  return c;
}

ScheduleCase make_mar_flow_case(const BenchSetup& setup) {
  ScheduleCase c = mar_case(setup, HeadKind::flow_matching);
  c.name = "mar + flow";
  c.note = fmt::format("bidirectional, {} steps; Euler {} steps on the predicted rows",
                       MarScheduleConfig{}.sampling.steps, c.options.head.flow.steps);
  return c;
}

// MAR's MAE split at the same total depth: kDepth/2 encoder blocks on the buffer and visible
// tokens, kDepth/2 decoder blocks on every row.
ScheduleCase make_mar_encoder_decoder_case(const BenchSetup& setup) {
  MarScheduleConfig config;
  config.encoder_decoder = true;
  ScheduleCase c = flat_case(setup, std::make_unique<MarSchedule>(config),
                             mar_style_config(kWidth, kDepth / 2, kHeads, kGrid * kGrid,
                                              kContinuousChannels, kClasses, kBuffer),
                             continuous_head(HeadKind::diffusion), Guidance::mar_token_ramp(kCfg));
  c.decoder = std::make_unique<Backbone>(
      mar_decoder_config(kWidth, kDepth / 2, kHeads, kGrid * kGrid, kWidth, kBuffer), 3);
  c.decoder->set_training(false);
  c.name = "mar + diffusion, enc-dec";
  c.note = fmt::format("MAE split {}+{} blocks; {} steps; DDPM {} steps", kDepth / 2, kDepth / 2,
                       config.sampling.steps, c.options.head.diffusion.steps);
  return c;
}

ScheduleCase make_hi_mar_case(const BenchSetup& setup) {
  const HiMarScheduleConfig config;
  const int64_t pivots = (kGrid / config.pivot_factor) * (kGrid / config.pivot_factor);
  BackboneConfig backbone = mar_style_config(kWidth, kDepth, kHeads, pivots + kGrid * kGrid,
                                             kContinuousChannels + 1, kClasses, kBuffer);
  backbone.segments = {kBuffer, pivots, kGrid * kGrid};
  ScheduleCase c = flat_case(setup, std::make_unique<HiMarSchedule>(config), backbone,
                             continuous_head(HeadKind::diffusion), Guidance::mar_token_ramp(kCfg));
  c.name = "hi_mar + diffusion";
  c.note = fmt::format("{} pivot + {} dense steps; DDPM {} steps", config.sampling.pivot_steps,
                       config.sampling.dense_steps, c.options.head.diffusion.steps);
  return c;
}

// FlowAR-style continuous scales over the same VAR-16 pyramid and backbone, the flow head drawing
// every scale's tokens (50 Euler steps per scale).
ScheduleCase make_continuous_next_scale_case(const BenchSetup& setup) {
  ContinuousNextScaleScheduleConfig config;
  config.patch_nums = kPatchNums;
  ScheduleCase c = flat_case(
      setup, std::make_unique<ContinuousNextScaleSchedule>(config),
      var_style_config(kWidth, kDepth, kHeads, kPatchNums, kContinuousChannels, kClasses),
      continuous_head(HeadKind::flow_matching), Guidance::var_scale_ramp(kCfg));
  c.name = "continuous next_scale + flow";
  c.note = fmt::format("FlowAR-style: block-causal, KV cache, one call per scale; Euler {} steps",
                       c.options.head.flow.steps);
  c.kv_cache_bytes = guided_cache_bytes(*c.backbone, setup.batch);
  return c;
}

using CaseFactory = ScheduleCase (*)(const BenchSetup&);
const CaseFactory kCases[] = {make_var_case,      make_var_no_cache_case,  make_hmar_case,
                              make_hmar_refined_case, make_raster_case,    make_maskgit_case,
                              make_mar_diffusion_case, make_mar_flow_case,
                              make_mar_encoder_decoder_case, make_hi_mar_case,
                              make_continuous_next_scale_case};

// ---------------------------------------------------------------------------------------------

double median(std::vector<double> v) {
  TESSERA_CHECK(!v.empty(), "median of no samples");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Result {
  std::string name, note;
  int64_t steps = 0;
  int64_t tokens = 0;  // the sequence the backbone runs over (condition rows included)
  std::vector<double> ms;
  int64_t peak_bytes = 0, kv_cache_bytes = 0;
};

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::string load_average() {
  std::FILE* file = std::fopen("/proc/loadavg", "r");
  if (file == nullptr) return "unknown";
  double one = 0;
  const bool ok = std::fscanf(file, "%lf", &one) == 1;
  std::fclose(file);
  return ok ? fmt::format("{:.2f}", one) : "unknown";
}

int run(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  install_counting_allocator();
  if (options.threads > 0) at::set_num_threads(options.threads);
  at::NoGradGuard no_grad;

  BenchSetup setup;
  setup.batch = options.batch;
  MultiScaleVqVaeConfig vq;
  vq.autoencoder.image_channels = 3;
  vq.autoencoder.base_channels = 32;
  vq.autoencoder.channel_multipliers = {1, 1};  // downsampling 2: the 16x16 latent of 32x32
  vq.autoencoder.res_blocks_per_level = 1;
  vq.autoencoder.lowest_level_attention = false;
  vq.autoencoder.middle_attention = false;
  vq.autoencoder.latent_channels = kCvae;
  vq.quantizer.codebook_size = kVocab;
  vq.quantizer.patch_nums = kPatchNums;
  setup.multiscale = std::make_shared<MultiScaleVqVae>(vq, 0);

  std::vector<ScheduleCase> cases;
  for (CaseFactory make : kCases) {
    ScheduleCase c = make(setup);
    if (c.name.find(options.only) != std::string::npos) cases.push_back(std::move(c));
  }
  TESSERA_CHECK(!cases.empty(), "schedule_bench: no case name contains '{}'", options.only);
  std::vector<Result> results(cases.size());

  fmt::print("schedule_bench: batch {}, 16x16 latent (VAR-16 pyramid: 680 tokens; flat: 256), "
             "backbone width {} depth {} heads {}, codebook {}, continuous tokens {} channels, "
             "cfg {} (doubled batch), {} threads, {} runs, load {}\n",
             options.batch, kWidth, kDepth, kHeads, kVocab, kContinuousChannels, kCfg,
             at::get_num_threads(),
             options.runs, load_average());
  auto call = [&](size_t i, uint64_t seed) {
    SampleRngs rngs(seed, 0, options.batch);
    ScheduleCase& c = cases[i];
    return c.schedule->sample(c.models(), c.labels, c.grids, c.options, rngs);
  };
  // One warm-up call each, which also measures the memory.
  for (size_t i = 0; i < cases.size(); ++i) {
    results[i].name = cases[i].name;
    results[i].note = cases[i].note;
    results[i].steps = cases[i].schedule->num_steps(cases[i].grids);
    results[i].tokens = cases[i].schedule->training_mask(cases[i].grids).query_length();
    results[i].kv_cache_bytes = cases[i].kv_cache_bytes;
    auto* counter = CountingAllocator::instance;
    const int64_t before = counter->current();
    counter->reset_peak();
    call(i, 0);
    results[i].peak_bytes = counter->peak() - before;
  }
  // Round-robin: round r starts at case r mod n.
  for (int r = 0; r < options.runs; ++r) {
    for (size_t k = 0; k < cases.size(); ++k) {
      const size_t i = (static_cast<size_t>(r) + k) % cases.size();
      const auto start = Clock::now();
      call(i, static_cast<uint64_t>(r + 1));
      results[i].ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
  }

  fmt::print("\n{:<30} {:>6} {:>6} {:>11} {:>11} {:>10} {:>10} {:>10} {:>12}\n", "schedule",
             "seq", "steps",
             "ms / call", "ms / image", "best ms", "peak MiB", "KV MiB", "activ. MiB");
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Result& r : results) {
    const double ms = median(r.ms);
    // The fastest call too: on a shared machine the slow calls measure the neighbours.
    const double best = *std::min_element(r.ms.begin(), r.ms.end());
    fmt::print("{:<30} {:>6} {:>6} {:>11.1f} {:>11.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>12.1f}\n",
               r.name, r.tokens, r.steps, ms, ms / static_cast<double>(options.batch), best,
               mib(r.peak_bytes), mib(r.kv_cache_bytes), mib(r.peak_bytes - r.kv_cache_bytes));
    nlohmann::ordered_json j;
    j["schedule"] = r.name;
    j["note"] = r.note;
    j["sequence_length"] = r.tokens;
    j["steps"] = r.steps;
    j["batch"] = options.batch;
    j["ms_per_call"] = ms;
    j["ms_per_image"] = ms / static_cast<double>(options.batch);
    j["ms_best"] = best;
    j["ms_runs"] = r.ms;
    j["peak_bytes"] = r.peak_bytes;
    j["kv_cache_bytes"] = r.kv_cache_bytes;
    j["activation_peak_bytes"] = r.peak_bytes - r.kv_cache_bytes;
    list.push_back(j);
  }
  nlohmann::ordered_json doc;
  doc["benchmark"] = "schedule_bench";
  doc["pyramid"] = kPatchNums;
  doc["grid"] = kGrid;
  doc["backbone"] = {{"width", kWidth}, {"depth", kDepth}, {"heads", kHeads},
                     {"style", "var_style_config"}};
  doc["codebook"] = kVocab;
  doc["guidance"] = fmt::format("var_scale_ramp({})", kCfg);
  doc["machine"] = tessera::machine_json(tessera::describe_machine());
  doc["threads"] = at::get_num_threads();
  doc["runs"] = options.runs;
  doc["quick"] = options.quick;
  doc["only"] = options.only;
  doc["load_average"] = load_average();
  doc["memory_method"] =
      "counting CPU allocator (c10::SetCPUAllocator): peak live bytes during one sampling call "
      "minus live bytes before it; activations = peak - KV cache";
  doc["results"] = list;
  const std::filesystem::path path = options.out / "schedules.json";
  tessera::write_file_atomically(path, doc.dump(2) + "\n");
  fmt::print("\nwrote {}\n", path.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "schedule_bench: error: %s\n", e.what());
    return 1;
  }
}
