// The ATen adapter of the CPU attention kernels (kernels/cpu): checks, outputs allocated with
// ATen, the mask and its tile plan and the tensors' pointers and strides put into the kernels'
// params (kernels/cpu/attention_kernels.h), the work split for at::get_num_threads() threads.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "attention/backends/backend.h"
#include "tessera/core/error.h"

namespace tessera::cpu {

namespace {

DType kernel_dtype(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat:
      return DType::float32;
    case at::kBFloat16:
      return DType::bfloat16;
    default:
      TESSERA_FAIL("{}: expected float32 or bfloat16 inputs, got {}", what, c10::toString(t));
  }
}

void check_tile_sizes(const TileSizes& sizes, const char* what) {
  TESSERA_CHECK(sizes.rows >= 1 && sizes.chunk >= 1 && sizes.group >= 1,
                "{}: tile sizes must be >= 1, got {} rows x {} keys, groups of {} rows", what,
                sizes.rows, sizes.chunk, sizes.group);
}

// The mask as the kernels read it, with the plan for query tiles of `rows` rows (cached by the
// mask, which outlives the launch).
MaskView mask_view(const BlockMask& mask, int64_t rows) {
  MaskView view;
  view.row_begin = mask.key_begin();
  view.row_end = mask.key_end();
  if (mask.rule() == MaskRule::dense) view.dense = mask.dense_mask().const_data_ptr<bool>();
  view.tiles = mask.plan(rows).tiles;
  return view;
}

// The work split: LibTorch's intra-op thread count (Threads in attention_kernels.h).
Threads kernel_threads() {
  Threads t;
  t.num_threads = at::get_num_threads();
  t.allow_parallel = !at::in_parallel_region();
  return t;
}

HeadStrides head_strides(const at::Tensor& t) { return {t.stride(0), t.stride(1)}; }

}  // namespace

at::Tensor with_contiguous_rows(const at::Tensor& t) {
  const bool rows_contiguous = t.stride(3) == 1 && (t.stride(2) == t.size(3) || t.size(2) == 1);
  return rows_contiguous ? t : t.contiguous();
}

AttentionForward attention_forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                   const at::Tensor& v_in, const BlockMask& mask, double scale,
                                   const TileSizes& tiles) {
  TESSERA_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
                "cpu::attention_forward: expected q, k, v of shape [B, H, L, D], got {}, {} and {} "
                "dimensions",
                q_in.dim(), k_in.dim(), v_in.dim());
  TESSERA_CHECK(q_in.size(2) == mask.query_length() && k_in.size(2) == mask.key_length(),
                "cpu::attention_forward: the mask is {}x{} but q has {} rows and k has {}",
                mask.query_length(), mask.key_length(), q_in.size(2), k_in.size(2));
  check_tile_sizes(tiles, "cpu::attention_forward");
  const DType dtype = kernel_dtype(q_in.scalar_type(), "cpu::attention_forward");
  const at::Tensor q = with_contiguous_rows(q_in), k = with_contiguous_rows(k_in),
                   v = with_contiguous_rows(v_in);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));

  ForwardParams p;
  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.q_strides = head_strides(q);
  p.k_strides = head_strides(k);
  p.v_strides = head_strides(v);
  p.out = out.mutable_data_ptr();
  p.lse = lse.mutable_data_ptr<float>();
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.lq = q.size(2);
  p.lk = k.size(2);
  p.head_dim = q.size(3);
  p.scale = static_cast<float>(scale);
  p.mask = mask_view(mask, tiles.rows);
  p.tiles = tiles;
  p.threads = kernel_threads();
  launch_attention_forward(p, dtype);
  return {out, lse};
}

AttentionGradients attention_backward(const at::Tensor& q_in, const at::Tensor& k_in,
                                      const at::Tensor& v_in, const at::Tensor& out_in,
                                      const at::Tensor& lse_in, const at::Tensor& grad_in,
                                      const BlockMask& mask, double scale,
                                      const TileSizes& tiles) {
  TESSERA_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
                "cpu::attention_backward: expected q, k, v of shape [B, H, L, D], got {}, {} and "
                "{} dimensions",
                q_in.dim(), k_in.dim(), v_in.dim());
  TESSERA_CHECK(q_in.size(2) == mask.query_length() && k_in.size(2) == mask.key_length(),
                "cpu::attention_backward: the mask is {}x{} but q has {} rows and k has {}",
                mask.query_length(), mask.key_length(), q_in.size(2), k_in.size(2));
  TESSERA_CHECK(out_in.sizes() == q_in.sizes() && grad_in.sizes() == q_in.sizes(),
                "cpu::attention_backward: out and grad_out must have q's shape");
  TESSERA_CHECK(lse_in.dim() == 3 && lse_in.numel() == q_in.size(0) * q_in.size(1) * q_in.size(2),
                "cpu::attention_backward: expected lse of shape [B, H, Lq]");
  check_tile_sizes(tiles, "cpu::attention_backward");
  const at::ScalarType dtype = q_in.scalar_type();
  const DType kernel = kernel_dtype(dtype, "cpu::attention_backward");
  // grad_out often arrives expanded or in another layout (e.g. from a sum), and in the output's
  // dtype; the kernel wants contiguous rows of q's dtype.
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor out = out_in.to(dtype).contiguous();
  const at::Tensor grad_out = grad_in.to(dtype).contiguous();
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());

  BackwardParams p;
  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.out = out.const_data_ptr();
  p.grad_out = grad_out.const_data_ptr();
  p.lse = lse.const_data_ptr<float>();
  p.dq = dq.mutable_data_ptr();
  p.dk = dk.mutable_data_ptr();
  p.dv = dv.mutable_data_ptr();
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.lq = q.size(2);
  p.lk = k.size(2);
  p.head_dim = q.size(3);
  p.scale = static_cast<float>(scale);
  p.mask = mask_view(mask, tiles.rows);
  p.tiles = tiles;
  p.threads = kernel_threads();
  launch_attention_backward(p, kernel);
  return {dq, dk, dv};
}

}  // namespace tessera::cpu
