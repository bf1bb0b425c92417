#include "tessera/nn/kv_cache.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

KVCache::KVCache(int64_t num_layers, int64_t batch, int64_t num_heads, int64_t head_dim,
                 int64_t capacity, at::ScalarType dtype, at::Device device)
    : batch_(batch),
      num_heads_(num_heads),
      head_dim_(head_dim),
      capacity_(capacity),
      dtype_(dtype),
      device_(device) {
  TESSERA_CHECK(num_layers >= 1 && batch >= 1 && num_heads >= 1 && head_dim >= 1 && capacity >= 1,
                "KVCache: layers, batch, heads, head dim and capacity must all be >= 1; got {}, "
                "{}, {}, {}, {}",
                num_layers, batch, num_heads, head_dim, capacity);
  TESSERA_CHECK(at::isFloatingType(dtype), "KVCache: the dtype must be floating point, got {}",
                dtype);
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  keys_.reserve(num_layers);
  values_.reserve(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    keys_.push_back(at::zeros({batch, num_heads, capacity, head_dim}, options));
    values_.push_back(at::zeros({batch, num_heads, capacity, head_dim}, options));
  }
}

void KVCache::truncate(int64_t length) {
  TESSERA_CHECK(length >= 0 && length <= length_,
                "KVCache::truncate: length {} is out of range; expected 0 <= length <= {} (the "
                "cached length)",
                length, length_);
  length_ = length;
}

void KVCache::set_length(int64_t length) {
  TESSERA_CHECK(length >= 0 && length <= capacity_,
                "KVCache::set_length: length {} is out of range; expected 0 <= length <= {} (the "
                "capacity)",
                length, capacity_);
  length_ = length;
}

int64_t KVCache::memory_bytes() const {
  int64_t bytes = 0;
  for (const auto& t : keys_) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  for (const auto& t : values_) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

std::string KVCache::summary() const {
  return fmt::format(
      "KV cache: {} layers x [{}, {}, {}, {}] {}, {:.2f} MiB, {} of {} positions "
      "filled",
      num_layers(), batch_, num_heads_, capacity_, head_dim_, dtype_,
      static_cast<double>(memory_bytes()) / (1024.0 * 1024.0), length_, capacity_);
}

void KVCache::check_layer(int64_t layer) const {
  TESSERA_CHECK(layer >= 0 && layer < num_layers(),
                "KVCache: layer {} is out of range; the cache has {} layers", layer, num_layers());
}

const at::Tensor& KVCache::key_buffer(int64_t layer) const {
  check_layer(layer);
  return keys_[layer];
}

const at::Tensor& KVCache::value_buffer(int64_t layer) const {
  check_layer(layer);
  return values_[layer];
}

std::pair<at::Tensor, at::Tensor> KVCache::write(int64_t layer, int64_t start,
                                                 const at::Tensor& keys, const at::Tensor& values) {
  check_layer(layer);
  TESSERA_CHECK(
      keys.defined() && values.defined() && keys.dim() == 4 && keys.sizes() == values.sizes(),
      "KVCache::write: keys and values must be 4-D tensors of equal shape; got {} and {}",
      keys.defined() ? keys.sizes() : at::IntArrayRef{},
      values.defined() ? values.sizes() : at::IntArrayRef{});
  TESSERA_CHECK(keys.size(0) == batch_ && keys.size(1) == num_heads_ && keys.size(3) == head_dim_,
                "KVCache::write: keys {} do not fit the cache's [batch {}, heads {}, n, head dim "
                "{}]",
                keys.sizes(), batch_, num_heads_, head_dim_);
  const int64_t n = keys.size(2);
  TESSERA_CHECK(start >= 0 && start <= length_,
                "KVCache::write: start slot {} is out of range; expected 0 <= start <= {} (the "
                "cached length)",
                start, length_);
  TESSERA_CHECK(start + n <= capacity_,
                "KVCache::write: {} positions from slot {} exceed the capacity {}; make a larger "
                "cache or truncate it",
                n, start, capacity_);
  TESSERA_CHECK(keys.device() == device_, "KVCache::write: keys on {} but the cache is on {}",
                keys.device(), device_);
  keys_[layer].slice(2, start, start + n).copy_(keys);
  values_[layer].slice(2, start, start + n).copy_(values);
  return {keys_[layer].slice(2, 0, start + n), values_[layer].slice(2, 0, start + n)};
}

}  // namespace tessera
