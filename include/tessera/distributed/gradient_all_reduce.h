#pragma once
// Data-parallel gradients: every rank ends a step with the mean of all ranks' gradients, the
// all-reduce overlapped with the backward pass.
//
// Use, around the last micro-batch of each optimizer step (earlier micro-batches accumulate into
// the parameters' .grad locally, as they would in one process):
//   GradientAllReduce reduce(group, parameters, config.bucket_megabytes);
//   reduce.arm();        // before the last backward()
//   loss.backward();     // hooks start each bucket's all-reduce as its gradients arrive
//   reduce.finish();     // starts what is left, waits, writes the mean into every .grad
//
// Note [Gradient buckets]
// The parameters are packed into flat buckets of about bucket_megabytes (one dtype and device
// each). A hook on each parameter copies its gradient (plus what earlier micro-batches left in
// .grad) into its bucket's slot; when a bucket's last slot is filled it is handed to c10d's
// all-reduce, which runs on the backend's own threads while autograd computes the next gradients.
// Buckets start strictly in index order on every rank, because c10d matches collectives by the
// order they are called in; so that the order fits when gradients arrive (roughly the reverse of
// the forward pass), the buckets are rebuilt once, after the first armed step, in the order rank
// 0 saw the gradients arrive (broadcast, so every rank builds the same buckets). A parameter that
// received no gradient in the step contributes zeros, and one that received none on any rank
// keeps an undefined .grad, as in one process (the optimizer skips it).
//
// Invariant: finish() leaves every rank with bit-identical .grad tensors (the all-reduce result
// is the same bytes everywhere), so the clipped norm, the optimizer step and the EMA agree.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tessera/distributed/process_group.h"

namespace tessera {

class GradientAllReduce {
 public:
  /// `parameters` are the trained tensors (requires_grad leaves), the same names and shapes on
  /// every rank (the trainer checks that first).
  GradientAllReduce(std::shared_ptr<ProcessGroup> group,
                    const std::map<std::string, at::Tensor>& parameters, double bucket_megabytes);
  ~GradientAllReduce();
  GradientAllReduce(const GradientAllReduce&) = delete;
  GradientAllReduce& operator=(const GradientAllReduce&) = delete;

  /// The next backward pass is the step's last: its gradients are all-reduced as they arrive.
  void arm();
  /// After that backward pass: all-reduces the remaining buckets, waits for all of them and
  /// replaces each parameter's .grad by the mean over the ranks. Throws (naming the failed rank)
  /// when a collective fails.
  void finish();

  /// Seconds finish() spent waiting for the all-reduce since the last call (the part of the
  /// communication the backward pass did not hide).
  double take_wait_seconds();
  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }  ///< Buckets.

  /// The parameters' order in the buckets once rebuilt from the first step's arrival order
  /// (indices into the parameters' names, sorted); empty before. A checkpoint keeps it, so that a
  /// resumed job sums every element in the same order as an uninterrupted one: Gloo's ring
  /// all-reduce adds the ranks' values in an order that depends on where the element sits in its
  /// bucket, which matters from three ranks on.
  std::vector<int64_t> rebuilt_order() const;
  /// Builds the buckets in `order` (from rebuilt_order()) instead of waiting for the first step.
  /// Throws unless it is a permutation of the parameters.
  void use_order(const std::vector<int64_t>& order);

 private:
  struct Slot {
    at::Tensor parameter;
    size_t bucket = 0;
    int64_t offset = 0;
    bool arrived = false;
  };
  struct Bucket {
    at::Tensor flat;
    std::vector<size_t> slots;
    size_t arrived = 0;
    ProcessGroup::Pending pending;
  };

  void build_buckets(const std::vector<size_t>& order);
  void on_gradient(size_t slot, const at::Tensor& gradient);
  void start_ready_buckets();
  void start(Bucket& bucket);

  std::shared_ptr<ProcessGroup> group_;
  int64_t bucket_bytes_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hooks_;
  std::vector<size_t> arrival_order_;
  size_t next_bucket_ = 0;
  bool armed_ = false;
  std::vector<int64_t> order_;  // rebuilt_order(); empty until the buckets are rebuilt
  double wait_seconds_ = 0;
  std::mutex mutex_;
};  ///< Bucketed, overlapped all-reduce of a data-parallel step's gradients.

}  // namespace tessera
