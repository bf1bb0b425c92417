#pragma once
// A preallocated key/value cache for incremental decoding: one [B, H, capacity, D] key buffer and
// one value buffer per layer, of which the first length() slots are filled.
//
// Note [Decoding against a KV cache]
// A decoding step runs the backbone on the step's positions only. Each attention layer writes the
// step's keys and values into slots [length, length + n) of its buffers and attends the step's n
// queries against slots [0, length + n) under the step's BlockMask, whose key index is the cache
// slot (the full training mask's rows(begin, end), or BlockMask::causal_tail(n, length + n)).
// After the last layer the cache's length advances by n. Keys are cached after every transform
// that depends on their position (rotary embedding, q/k normalisation), so a step never
// recomputes an earlier position. The buffers are allocated once; append never reallocates, and
// truncate() only moves the length (slots past it are overwritten by the next step).
// Decoding with a cache is inference: the backbone runs it without autograd.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

class KVCache {
 public:
  /// Zero-filled buffers for `num_layers` layers of [batch, num_heads, capacity, head_dim].
  KVCache(int64_t num_layers, int64_t batch, int64_t num_heads, int64_t head_dim, int64_t capacity,
          at::ScalarType dtype = at::kFloat, at::Device device = at::kCPU);

  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }  ///< Layers cached.
  int64_t batch() const { return batch_; }  ///< Batch size.
  int64_t num_heads() const { return num_heads_; }  ///< Attention heads.
  int64_t head_dim() const { return head_dim_; }  ///< Channels per head.
  int64_t capacity() const { return capacity_; }  ///< Positions the buffers hold.
  at::ScalarType dtype() const { return dtype_; }  ///< Element type of the buffers.
  at::Device device() const { return device_; }  ///< Where the buffers are.

  /// Positions cached so far (the next step's first slot).
  int64_t length() const { return length_; }
  int64_t free_slots() const { return capacity_ - length_; }  ///< capacity() - length().

  /// Forgets every position (length 0); the buffers stay allocated.
  void reset() { length_ = 0; }
  /// Keeps the first `length` positions (0 <= length <= length()).
  void truncate(int64_t length);

  /// Bytes held by the buffers (keys and values of every layer).
  int64_t memory_bytes() const;
  /// "KV cache: 24 layers x [2, 16, 680, 64] float32, 1.31 GiB, 1 of 680 positions filled"
  std::string summary() const;

  // --- used by the backbone's attention layers (see Note [Decoding against a KV cache]) ---
  /// Writes keys and values [batch, num_heads, n, head_dim] (cast to the cache's dtype) into slots
  /// [start, start + n) of `layer` and returns that layer's keys and values over slots
  /// [0, start + n). Requires start <= length() and start + n <= capacity(); does not move length.
  std::pair<at::Tensor, at::Tensor> write(int64_t layer, int64_t start, const at::Tensor& keys,
                                          const at::Tensor& values);
  /// Sets the filled length after a step (0 <= length <= capacity()).
  void set_length(int64_t length);

  /// A layer's whole buffers [batch, num_heads, capacity, head_dim].
  const at::Tensor& key_buffer(int64_t layer) const;
  const at::Tensor& value_buffer(int64_t layer) const;  ///< See key_buffer().

 private:
  void check_layer(int64_t layer) const;

  int64_t batch_ = 0, num_heads_ = 0, head_dim_ = 0, capacity_ = 0;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  int64_t length_ = 0;
  std::vector<at::Tensor> keys_, values_;
};  ///< Keys and values of earlier positions, per layer, for incremental decoding.

}  // namespace tessera
