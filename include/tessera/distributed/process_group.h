#pragma once
// The ranks of a data-parallel job and the collectives between them, on PyTorch's c10d.
//
// ProcessGroup::connect() meets the other ranks at rank 0's c10d::TCPStore (MASTER_ADDR and
// MASTER_PORT) and builds c10d's own backend for the tensors' device: ProcessGroupGloo for CPU
// tensors, ProcessGroupNCCL for CUDA ones (see docs/distributed.md for which were built and run
// where). Nothing here moves bytes itself; this class adds what a training loop needs around
// c10d: every call is bounded by the timeout, and a failure names the rank behind it.
//
// Use: every rank makes the same calls in the same order (c10d's rule for collectives).
//   auto group = ProcessGroup::connect(DistributedEnvironment::from_variables(), options);
//   group->require_agreement("trainer config", config_json);  // refuses a rank that differs
//   group->broadcast(parameter, 0);                           // rank 0's initial weights
//   auto pending = group->start_all_reduce_sum(bucket);       // overlapped with other work
//   pending.wait();
//
// Invariant: after any method throws, the group is unusable and the job must stop; the error
// says which rank stopped or disagreed when that can be known (Note [Naming the failed rank]).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "tessera/core/config.h"
#include "tessera/distributed/distributed_environment.h"

namespace tessera {

struct DistributedConfig {
  /// "auto": Gloo for CPU models, NCCL for CUDA ones; or "gloo" / "nccl" to force one.
  std::string backend = "auto";
  /// Bound on every collective and on the rendezvous: a rank that died or hangs stops the others
  /// with an error after at most this long.
  double timeout_seconds = 300;
  /// Gradients are all-reduced in buckets of about this size, each started as soon as its last
  /// gradient is computed (Note [Gradient buckets]).
  double bucket_megabytes = 25;

  template <class Visitor>
  void visit(Visitor& v) {
    v("backend", backend);
    v("timeout_seconds", timeout_seconds);
    v("bucket_megabytes", bucket_megabytes);
  }                       ///< Lists the fields for the config reader and writer (core/config.h).
  void validate() const;  ///< Throws tessera::Error naming the first invalid field.
};  ///< How a data-parallel run communicates (ignored by a run of one process).

/// Whether this build can run a job of several processes on CPU tensors (Gloo's headers were
/// found at configure time) and on CUDA tensors (NCCL).
bool gloo_available();
bool nccl_available();  ///< See gloo_available().

class ProcessGroup {
 public:
  class Pending {
   public:
    Pending();                               ///< Nothing started (wait() throws).
    ~Pending();                              ///< Does not wait: call wait() first.
    Pending(Pending&&) noexcept;             ///< Moves the handle.
    Pending& operator=(Pending&&) noexcept;  ///< Moves the handle.
    /// Blocks until the collective finished on every rank; throws like ProcessGroup's calls.
    void wait();

   private:
    friend class ProcessGroup;
    struct Work;
    std::unique_ptr<Work> work_;
  };  ///< A collective started by start_all_reduce_sum().

  /// Meets the other ranks (every rank calls it) and builds the backend for `device`. Throws
  /// tessera::Error when a rank does not arrive within the timeout, or when this build lacks the
  /// backend (naming what is missing).
  static std::shared_ptr<ProcessGroup> connect(const DistributedEnvironment& environment,
                                               const DistributedConfig& config, c10::Device device);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const;              ///< This process's rank.
  int64_t world_size() const;        ///< The number of ranks.
  std::string backend_name() const;  ///< "gloo" or "nccl".

  /// Replaces `tensor` (contiguous, on the group's device) by its sum over the ranks.
  void all_reduce_sum(at::Tensor& tensor);
  /// The same without waiting: the tensor must not be touched until the result's wait().
  Pending start_all_reduce_sum(at::Tensor tensor);
  /// Replaces `tensor` on every rank by rank `root`'s.
  void broadcast(at::Tensor& tensor, int64_t root);
  /// Every rank's `tensor` stacked: [world_size, ...] (the same shape on every rank).
  at::Tensor all_gather(const at::Tensor& tensor);

  /// Throws tessera::Error on every rank unless all ranks passed the same `value` for `what`,
  /// naming the ranks whose value differs from rank 0's and where the first difference is.
  void require_agreement(const std::string& what, const std::string& value);

  /// Leaves `message` where the other ranks look when their next collective fails, so that their
  /// error names this rank and its reason. Never throws (it is called while unwinding).
  void report_failure(const std::string& message) noexcept;

 private:
  struct State;
  explicit ProcessGroup(std::unique_ptr<State> state);
  void check_usable() const;  // throws once a collective has failed (the invariant above)
  [[noreturn]] void fail(const std::string& operation, const std::string& cause);
  std::unique_ptr<State> state_;
};  ///< The ranks of a job, c10d's collectives between them, bounded and with named failures.

}  // namespace tessera
