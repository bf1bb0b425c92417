#include "tessera/distributed/gradient_all_reduce.h"

#include <ATen/ATen.h>

#include <chrono>

#include "tessera/core/error.h"

namespace tessera {

GradientAllReduce::GradientAllReduce(std::shared_ptr<ProcessGroup> group,
                                     const std::map<std::string, at::Tensor>& parameters,
                                     double bucket_megabytes)
    : group_(std::move(group)),
      bucket_bytes_(static_cast<int64_t>(bucket_megabytes * 1024.0 * 1024.0)) {
  TESSERA_CHECK(group_ != nullptr, "GradientAllReduce: no process group");
  TESSERA_CHECK(bucket_bytes_ > 0, "GradientAllReduce: bucket_megabytes must be positive, got {}",
                bucket_megabytes);
  TESSERA_CHECK(!parameters.empty(), "GradientAllReduce: no parameters");
  for (const auto& [name, parameter] : parameters) {
    TESSERA_CHECK(parameter.requires_grad() && parameter.is_leaf(),
                  "GradientAllReduce: parameter '{}' is not a leaf that requires grad", name);
    slots_.push_back(Slot{parameter});
  }
  // Before any step is seen: the reverse of the names' order (the buckets are rebuilt from the
  // observed arrival order after the first step, Note [Gradient buckets]).
  std::vector<size_t> order;
  for (size_t i = slots_.size(); i-- > 0;) order.push_back(i);
  build_buckets(order);
  for (size_t i = 0; i < slots_.size(); ++i) {
    hooks_.push_back(slots_[i].parameter.register_hook(
        [this, i](const at::TensorBase& gradient) { on_gradient(i, at::Tensor(gradient)); }));
  }
}

GradientAllReduce::~GradientAllReduce() {
  for (size_t i = 0; i < hooks_.size(); ++i) slots_[i].parameter.remove_hook(hooks_[i]);
}

void GradientAllReduce::build_buckets(const std::vector<size_t>& order) {
  buckets_.clear();
  std::vector<std::vector<size_t>> groups;
  int64_t bytes = 0;
  for (size_t index : order) {
    const at::Tensor& p = slots_[index].parameter;
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits = !groups.empty() && bytes + size <= bucket_bytes_ &&
                      slots_[groups.back().front()].parameter.scalar_type() == p.scalar_type() &&
                      slots_[groups.back().front()].parameter.device() == p.device();
    if (!fits) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(index);
    bytes += size;
  }
  buckets_.resize(groups.size());
  for (size_t b = 0; b < groups.size(); ++b) {
    int64_t elements = 0;
    for (size_t index : groups[b]) {
      slots_[index].bucket = b;
      slots_[index].offset = elements;
      elements += slots_[index].parameter.numel();
    }
    const at::Tensor& first = slots_[groups[b].front()].parameter;
    buckets_[b].flat = at::zeros({elements}, first.options().requires_grad(false));
    buckets_[b].slots = std::move(groups[b]);
  }
}

void GradientAllReduce::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  TESSERA_CHECK(!armed_, "GradientAllReduce::arm: the previous step was not finished");
  armed_ = true;
  next_bucket_ = 0;
  arrival_order_.clear();
  for (Slot& slot : slots_) slot.arrived = false;
  for (Bucket& bucket : buckets_) {
    bucket.arrived = 0;
  }
}

void GradientAllReduce::on_gradient(size_t index, const at::Tensor& gradient) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;  // an earlier micro-batch: .grad accumulates locally
  Slot& slot = slots_[index];
  if (slot.arrived) return;
  Bucket& bucket = buckets_[slot.bucket];
  at::Tensor destination = bucket.flat.slice(0, slot.offset, slot.offset + slot.parameter.numel())
                               .view_as(slot.parameter);
  const at::Tensor& earlier = slot.parameter.grad();
  if (earlier.defined()) {
    at::add_out(destination, earlier, gradient);
  } else {
    destination.copy_(gradient);
  }
  slot.arrived = true;
  arrival_order_.push_back(index);
  ++bucket.arrived;
  start_ready_buckets();
}

void GradientAllReduce::start_ready_buckets() {
  while (next_bucket_ < buckets_.size() &&
         buckets_[next_bucket_].arrived == buckets_[next_bucket_].slots.size()) {
    start(buckets_[next_bucket_++]);
  }
}

void GradientAllReduce::start(Bucket& bucket) {
  bucket.pending = group_->start_all_reduce_sum(bucket.flat);
}

void GradientAllReduce::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  TESSERA_CHECK(armed_, "GradientAllReduce::finish: arm() was not called before the backward pass");
  armed_ = false;
  // Which parameters have a gradient on this rank: from this backward pass, or from earlier
  // micro-batches only.
  at::Tensor has_gradient = at::zeros({static_cast<int64_t>(slots_.size())}, at::kFloat);
  auto* flags = has_gradient.data_ptr<float>();
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    const at::Tensor& earlier = slot.parameter.grad();
    if (slot.arrived || earlier.defined()) flags[i] = 1;
    if (slot.arrived) continue;
    Bucket& bucket = buckets_[slot.bucket];
    at::Tensor destination =
        bucket.flat.slice(0, slot.offset, slot.offset + slot.parameter.numel());
    if (earlier.defined()) {
      destination.view_as(slot.parameter).copy_(earlier);
    } else {
      destination.zero_();
    }
    slot.arrived = true;
    ++bucket.arrived;
  }
  start_ready_buckets();
  const auto start_wait = std::chrono::steady_clock::now();
  for (Bucket& bucket : buckets_) bucket.pending.wait();
  at::Tensor flags_sum = has_gradient.to(slots_.front().parameter.device());
  group_->all_reduce_sum(flags_sum);
  wait_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_wait).count();
  const at::Tensor any_gradient = flags_sum.cpu();
  const auto* any = any_gradient.data_ptr<float>();
  const double ranks = static_cast<double>(group_->world_size());
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (any[i] == 0) {
      slot.parameter.mutable_grad() = at::Tensor();
      continue;
    }
    const at::Tensor sum = buckets_[slot.bucket]
                               .flat.slice(0, slot.offset, slot.offset + slot.parameter.numel())
                               .view_as(slot.parameter);
    slot.parameter.mutable_grad() = sum.div(ranks);
  }
  if (order_.empty()) {
    // Note [Gradient buckets]: rank 0's arrival order, then the parameters it did not see.
    std::vector<int64_t> order(arrival_order_.begin(), arrival_order_.end());
    std::vector<bool> seen(slots_.size(), false);
    for (size_t index : arrival_order_) seen[index] = true;
    for (size_t i = slots_.size(); i-- > 0;) {
      if (!seen[i]) order.push_back(static_cast<int64_t>(i));
    }
    at::Tensor shared = at::tensor(order, at::kLong);
    if (slots_.front().parameter.is_cuda()) shared = shared.cuda();
    group_->broadcast(shared, 0);
    const at::Tensor agreed = shared.cpu();
    std::vector<size_t> rebuilt;
    for (int64_t i = 0; i < agreed.numel(); ++i) {
      rebuilt.push_back(static_cast<size_t>(agreed.data_ptr<int64_t>()[i]));
    }
    build_buckets(rebuilt);
    order_.assign(rebuilt.begin(), rebuilt.end());
  }
}

std::vector<int64_t> GradientAllReduce::rebuilt_order() const { return order_; }

void GradientAllReduce::use_order(const std::vector<int64_t>& order) {
  std::lock_guard<std::mutex> lock(mutex_);
  TESSERA_CHECK(!armed_, "GradientAllReduce::use_order: a step is in progress");
  std::vector<bool> seen(slots_.size(), false);
  TESSERA_CHECK(order.size() == slots_.size(),
                "GradientAllReduce::use_order: {} entries for {} parameters", order.size(),
                slots_.size());
  std::vector<size_t> indices;
  for (int64_t index : order) {
    TESSERA_CHECK(index >= 0 && static_cast<size_t>(index) < slots_.size() &&
                      !seen[static_cast<size_t>(index)],
                  "GradientAllReduce::use_order: not a permutation of the {} parameters",
                  slots_.size());
    seen[static_cast<size_t>(index)] = true;
    indices.push_back(static_cast<size_t>(index));
  }
  build_buckets(indices);
  order_ = order;
}

double GradientAllReduce::take_wait_seconds() {
  std::lock_guard<std::mutex> lock(mutex_);
  const double seconds = wait_seconds_;
  wait_seconds_ = 0;
  return seconds;
}

}  // namespace tessera
