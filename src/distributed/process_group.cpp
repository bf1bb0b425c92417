#include "tessera/distributed/process_group.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

// Note [Gloo's headers from Debian]
// The torch wheel carries c10d's Gloo backend compiled into libtorch_cpu.so (with its own copy of
// gloo, linked in statically), but not gloo's headers, which ProcessGroupGloo.hpp includes.
// Debian's libgloo-dev (gloo at git 2022-05-18) supplies them; CMake compiles this file with
// USE_C10D_GLOO and them when they are found, and never links Debian's libgloo.so. That is sound
// because of how ProcessGroupGloo.hpp uses gloo's types, checked against torch 2.11's header:
//   - ProcessGroupGloo's own members hold gloo objects only through std::shared_ptr
//     (::gloo::rendezvous::Store, ::gloo::Context) and Options through a vector of
//     std::shared_ptr<::gloo::transport::Device>; SendWork and RecvWork through std::unique_ptr
//     of ::gloo::transport::UnboundBuffer; AsyncWork through std::shared_ptr<gloo::Context>. A
//     smart pointer's size does not depend on its pointee, so sizeof(ProcessGroupGloo), which
//     this file's make_intrusive allocates, and every member offset are the same with either
//     gloo version;
//   - those smart pointers are made and destroyed only by libtorch_cpu's code: a shared_ptr binds
//     its deleter where it is made, and the destructors that release the unique_ptrs
//     (~ProcessGroupGloo, declared in the header, and SendWork's and RecvWork's implicit ones,
//     emitted with their vtables beside their key function wait()) are all defined in the
//     library, so no gloo destructor is compiled here;
//   - the header's inline code that touches gloo (GlooStore, a ::gloo::rendezvous::Store
//     subclass defined inline; setTimeout(), which calls gloo::Context::setTimeout) is never
//     used here: this file constructs no GlooStore and sets timeouts through Options only, so no
//     vtable or inline gloo function from the older headers is emitted into libtessera;
//   - everything else this file calls (the constructor, create(), createDeviceForHostname(),
//     createDefaultDevice(), and the collectives through c10d::Backend's virtual functions) is
//     defined in libtorch_cpu.so, compiled with the wheel's own gloo.
// The gloo version only has to declare the names the header mentions, which 2022's does (the
// GLOO_STORE_HAS_STORE_V2 block is skipped with it, and it only overrides functions in GlooStore).
#ifdef TESSERA_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef TESSERA_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace tessera {

// Note [Naming the failed rank]
// c10d reports a failed collective from the rank that sees it: a dead peer is a "connection
// reset" and a hung one a timeout, neither naming the rank. So every rank keeps two kinds of keys
// in the job's store: a rank that stops on an error of its own (a non-finite loss, a bad file)
// writes tessera/stopped/<rank> with its message before it exits (report_failure), and a rank
// whose collective fails writes tessera/observed/<rank>. The observer then waits briefly for the
// other survivors to write theirs and names every rank that left a reason (with it) and every rank
// that left neither key (killed, crashed or hung). When the store itself is gone, rank 0, which
// holds it, is the one that stopped.

namespace {

constexpr const char* kStoppedPrefix = "tessera/stopped/";
constexpr const char* kObservedPrefix = "tessera/observed/";

std::vector<uint8_t> bytes_of(const std::string& text) {
  return std::vector<uint8_t>(text.begin(), text.end());
}

std::string text_of(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

std::chrono::milliseconds milliseconds_of(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

}  // namespace

void DistributedConfig::validate() const {
  TESSERA_CHECK(backend == "auto" || backend == "gloo" || backend == "nccl",
                "distributed.backend must be \"auto\", \"gloo\" or \"nccl\", got \"{}\"", backend);
  TESSERA_CHECK(timeout_seconds > 0, "distributed.timeout_seconds must be positive, got {}",
                timeout_seconds);
  TESSERA_CHECK(bucket_megabytes > 0, "distributed.bucket_megabytes must be positive, got {}",
                bucket_megabytes);
}

bool gloo_available() {
#ifdef TESSERA_HAVE_GLOO
  return true;
#else
  return false;
#endif
}

bool nccl_available() {
#ifdef TESSERA_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

struct ProcessGroup::State {
  DistributedEnvironment environment;
  DistributedConfig config;
  std::string backend_name;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int64_t agreements = 0;
  bool failed = false;
};

struct ProcessGroup::Pending::Work {
  ProcessGroup* group = nullptr;
  c10::intrusive_ptr<c10d::Work> work;
};

ProcessGroup::Pending::Pending() = default;
ProcessGroup::Pending::~Pending() = default;
ProcessGroup::Pending::Pending(Pending&&) noexcept = default;
ProcessGroup::Pending& ProcessGroup::Pending::operator=(Pending&&) noexcept = default;

void ProcessGroup::Pending::wait() {
  TESSERA_CHECK(work_ != nullptr, "ProcessGroup::Pending::wait: nothing was started");
  ProcessGroup& group = *work_->group;
  try {
    work_->work->wait(milliseconds_of(group.state_->config.timeout_seconds));
  } catch (const std::exception& e) {
    group.fail("all-reduce", e.what());
  }
  work_.reset();
}

ProcessGroup::ProcessGroup(std::unique_ptr<State> state) : state_(std::move(state)) {}
ProcessGroup::~ProcessGroup() = default;

std::shared_ptr<ProcessGroup> ProcessGroup::connect(const DistributedEnvironment& environment,
                                                    const DistributedConfig& config,
                                                    c10::Device device) {
  config.validate();
  TESSERA_CHECK(environment.world_size >= 1 && environment.rank >= 0 &&
                    environment.rank < environment.world_size,
                "ProcessGroup: rank {} of {} is not a rank of the job", environment.rank,
                environment.world_size);
  std::string backend = config.backend;
  if (backend == "auto") backend = device.is_cuda() ? "nccl" : "gloo";
  TESSERA_CHECK(backend != "gloo" || !device.is_cuda(),
                "distributed.backend \"gloo\" is for CPU models; this model is on {} (use \"nccl\" "
                "or \"auto\")",
                device.str());
  TESSERA_CHECK(
      backend != "nccl" || device.is_cuda(),
      "distributed.backend \"nccl\" is for CUDA models; this model is on {} (use \"gloo\" "
      "or \"auto\")",
      device.str());
  TESSERA_CHECK(backend != "gloo" || gloo_available(),
                "this Tessera was built without Gloo, so it cannot train on CPU tensors with {} "
                "processes: install Debian's libgloo-dev (scripts/bootstrap does) and configure "
                "again",
                environment.world_size);
  TESSERA_CHECK(backend != "nccl" || nccl_available(),
                "this Tessera was built without NCCL, so it cannot train on CUDA tensors with {} "
                "processes: build it with CUDA (TESSERA_WITH_CUDA) and the venv's nvidia-nccl "
                "headers",
                environment.world_size);

  auto state = std::make_unique<State>();
  state->environment = environment;
  state->config = config;
  state->backend_name = backend;
  const auto timeout = milliseconds_of(config.timeout_seconds);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(environment.master_port);
    store_options.isServer = environment.rank == 0;
    store_options.numWorkers = static_cast<size_t>(environment.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    state->store = c10::make_intrusive<c10d::TCPStore>(environment.master_address, store_options);
  } catch (const std::exception& e) {
    TESSERA_FAIL(
        "rank {}: the rendezvous at {}:{} with {} ranks failed within {} s (is rank 0 "
        "running, are MASTER_ADDR and MASTER_PORT the same on every rank, is the port "
        "free on rank 0?): {}",
        environment.rank, environment.master_address, environment.master_port,
        environment.world_size, config.timeout_seconds, e.what());
  }
  try {
    if (backend == "gloo") {
#ifdef TESSERA_HAVE_GLOO
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // On loopback every rank listens on 127.0.0.1; otherwise on the interface GLOO_SOCKET_IFNAME
      // names, or the one this host's name resolves to (what torch.distributed does).
      const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
      if (environment.master_address == "127.0.0.1" || environment.master_address == "localhost") {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else if (interface != nullptr && *interface != '\0') {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      state->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
          state->store, static_cast<int>(environment.rank),
          static_cast<int>(environment.world_size), options);
#endif
    } else {
#ifdef TESSERA_HAVE_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      state->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          state->store, static_cast<int>(environment.rank),
          static_cast<int>(environment.world_size), options);
#endif
    }
  } catch (const std::exception& e) {
    TESSERA_FAIL("rank {}: connecting the {} backend between {} ranks failed: {}", environment.rank,
                 backend, environment.world_size, e.what());
  }
  return std::shared_ptr<ProcessGroup>(new ProcessGroup(std::move(state)));
}

void ProcessGroup::check_usable() const {
  TESSERA_CHECK(!state_->failed, "ProcessGroup: a collective already failed; the job must stop");
}

int64_t ProcessGroup::rank() const { return state_->environment.rank; }
int64_t ProcessGroup::world_size() const { return state_->environment.world_size; }
std::string ProcessGroup::backend_name() const { return state_->backend_name; }

void ProcessGroup::all_reduce_sum(at::Tensor& tensor) {
  Pending pending = start_all_reduce_sum(tensor);
  pending.wait();
}

ProcessGroup::Pending ProcessGroup::start_all_reduce_sum(at::Tensor tensor) {
  check_usable();
  TESSERA_CHECK(tensor.is_contiguous(),
                "ProcessGroup::all_reduce_sum: the tensor must be "
                "contiguous");
  Pending pending;
  pending.work_ = std::make_unique<Pending::Work>();
  pending.work_->group = this;
  try {
    std::vector<at::Tensor> tensors{std::move(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = milliseconds_of(state_->config.timeout_seconds);
    pending.work_->work = state_->backend->allreduce(tensors, options);
  } catch (const std::exception& e) {
    fail("all-reduce", e.what());
  }
  return pending;
}

void ProcessGroup::broadcast(at::Tensor& tensor, int64_t root) {
  check_usable();
  TESSERA_CHECK(root >= 0 && root < world_size(),
                "ProcessGroup::broadcast: root {} is not a "
                "rank of {}",
                root, world_size());
  try {
    std::vector<at::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = milliseconds_of(state_->config.timeout_seconds);
    state_->backend->broadcast(tensors, options)->wait(options.timeout);
  } catch (const std::exception& e) {
    fail("broadcast", e.what());
  }
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& tensor) {
  check_usable();
  std::vector<at::Tensor> inputs{tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < world_size(); ++r) outputs[0].push_back(at::empty_like(inputs[0]));
  try {
    c10d::AllgatherOptions options;
    options.timeout = milliseconds_of(state_->config.timeout_seconds);
    state_->backend->allgather(outputs, inputs, options)->wait(options.timeout);
  } catch (const std::exception& e) {
    fail("all-gather", e.what());
  }
  return at::stack(outputs[0]);
}

void ProcessGroup::require_agreement(const std::string& what, const std::string& value) {
  check_usable();
  const std::string prefix = fmt::format("tessera/agree/{}/", state_->agreements++);
  std::vector<std::string> values(static_cast<size_t>(world_size()));
  try {
    state_->store->set(prefix + std::to_string(rank()), bytes_of(value));
    for (int64_t r = 0; r < world_size(); ++r) {
      values[static_cast<size_t>(r)] = text_of(state_->store->get(prefix + std::to_string(r)));
    }
  } catch (const std::exception& e) {
    fail(fmt::format("comparing the ranks' {}", what), e.what());
  }
  std::vector<std::string> differences;
  for (int64_t r = 1; r < world_size(); ++r) {
    const std::string& mine = values[static_cast<size_t>(r)];
    const std::string& first = values[0];
    if (mine == first) continue;
    const auto at = static_cast<size_t>(
        std::mismatch(
            mine.begin(),
            mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), first.size())),
            first.begin())
            .first -
        mine.begin());
    const size_t from = at > 40 ? at - 40 : 0;
    differences.push_back(fmt::format("rank {} has \"…{}…\" where rank 0 has \"…{}…\"", r,
                                      mine.substr(from, 120), first.substr(from, 120)));
  }
  if (!differences.empty()) {
    state_->failed = true;
    TESSERA_FAIL(
        "rank {}: the ranks of this job disagree on their {}: {} (every rank must start "
        "with the same config and model)",
        rank(), what, fmt::join(differences, "; "));
  }
}

void ProcessGroup::report_failure(const std::string& message) noexcept {
  if (state_->failed) return;  // it only saw another rank's failure, which that rank reports
  try {
    state_->store->set(kStoppedPrefix + std::to_string(rank()), bytes_of(message));
  } catch (...) {  // the store may be gone with rank 0; the others then name rank 0 themselves
  }
}

void ProcessGroup::fail(const std::string& operation, const std::string& cause) {
  state_->failed = true;
  const int64_t me = rank();
  std::vector<std::string> findings;
  try {
    state_->store->set(kObservedPrefix + std::to_string(me), bytes_of(cause));
    // Give the other survivors a moment to say they are alive (they see the failure as well).
    const auto deadline =
        std::chrono::steady_clock::now() +
        std::min(milliseconds_of(state_->config.timeout_seconds), std::chrono::milliseconds(3000));
    std::vector<int64_t> silent;
    do {
      silent.clear();
      for (int64_t r = 0; r < world_size(); ++r) {
        if (r == me) continue;
        const std::string id = std::to_string(r);
        if (!state_->store->check({kStoppedPrefix + id}) &&
            !state_->store->check({kObservedPrefix + id})) {
          silent.push_back(r);
        }
      }
      if (silent.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() < deadline);
    for (int64_t r = 0; r < world_size(); ++r) {
      const std::string key = kStoppedPrefix + std::to_string(r);
      if (r != me && state_->store->check({key})) {
        findings.push_back(fmt::format("rank {} stopped: {}", r, text_of(state_->store->get(key))));
      }
    }
    if (!silent.empty()) {
      findings.push_back(fmt::format(
          "rank{} {} stopped answering (killed, crashed, or hung past the {} s timeout)",
          silent.size() > 1 ? "s" : "", fmt::join(silent, ", "), state_->config.timeout_seconds));
    }
  } catch (const std::exception&) {
    if (me != 0) {
      findings.push_back("rank 0 stopped (the rendezvous store it holds no longer answers)");
    }
  }
  if (findings.empty()) findings.push_back("no other rank reported a reason");
  TESSERA_FAIL("rank {}: the {} across {} ranks failed: {}. c10d said: {}", me, operation,
               world_size(), fmt::join(findings, "; "), cause);
}

}  // namespace tessera
