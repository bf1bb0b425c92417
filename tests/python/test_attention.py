"""tessera.attention against torch's own scaled_dot_product_attention (SDPA) in float64 math, with
each mask written out here from its published definition (not from tessera.BlockMask.to_dense)."""

import math

import pytest
import torch
import torch.nn.functional as F

import tessera

torch.manual_seed(0)


def segment_ids(segments):
    return torch.repeat_interleave(torch.arange(len(segments)), torch.tensor(segments))


# The rules by their definitions (docs/attention.md): allowed[q, k].
def dense_rule(rule, segments, band=0):
    length = sum(segments)
    q = torch.arange(length)[:, None]
    k = torch.arange(length)[None, :]
    sq, sk = segment_ids(segments)[:, None], segment_ids(segments)[None, :]
    if rule == "causal":
        return k <= q
    if rule == "bidirectional":
        return torch.ones(length, length, dtype=torch.bool)
    if rule == "block_causal":
        return sk <= sq
    if rule == "block_diagonal":
        return sk == sq
    if rule == "self_and_previous":
        return (sk <= sq) & (sk >= sq - 1)
    if rule == "banded":
        return (q - k).abs() <= band
    if rule == "prefix_lm":
        return (k <= q) | ((sq == 0) & (sk == 0))
    raise AssertionError(rule)


def make_mask(rule, segments, band=0):
    if rule == "banded":
        return tessera.BlockMask.banded(segments, band)
    return getattr(tessera.BlockMask, rule)(segments)


RULES = ["causal", "bidirectional", "block_causal", "block_diagonal", "self_and_previous", "banded", "prefix_lm"]
VAR_TINY = [1, 4, 9, 16]  # VAR's pyramid 1, 2, 3, 4
RAGGED = [3, 17, 1, 40, 7, 61]  # segment lengths that cut across every tile size


def sdpa_reference(q, k, v, allowed, scale=None):
    """float64 SDPA with the boolean mask; rows with no visible key give 0 (Tessera's convention),
    where SDPA itself gives NaN."""
    out = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=allowed, scale=scale)
    empty = ~allowed.any(dim=-1)
    return out.masked_fill(empty[:, None], 0.0)


def random_qkv(b, h, lq, lk, d, dtype=torch.float32, requires_grad=False):
    q = torch.randn(b, h, lq, d, dtype=dtype)
    k = torch.randn(b, h, lk, d, dtype=dtype)
    v = torch.randn(b, h, lk, d, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def relative_error(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("segments", [VAR_TINY, RAGGED], ids=["var_tiny", "ragged"])
def test_forward_matches_float64_sdpa_for_every_rule(rule, segments):
    allowed = dense_rule(rule, segments, band=5)
    mask = make_mask(rule, segments, band=5)
    assert torch.equal(mask.to_dense(), allowed)
    length = sum(segments)
    q, k, v = random_qkv(2, 3, length, length, 64)
    out = tessera.attention(q, k, v, mask)
    assert out.shape == q.shape and out.dtype == torch.float32
    assert relative_error(out, sdpa_reference(q, k, v, allowed)) < 1e-5


@pytest.mark.parametrize("rule", RULES)
def test_gradients_match_float64_sdpa(rule):
    segments = RAGGED
    allowed = dense_rule(rule, segments, band=7)
    q, k, v = random_qkv(2, 2, sum(segments), sum(segments), 32, requires_grad=True)
    out = tessera.attention(q, k, v, make_mask(rule, segments, band=7))
    grad = torch.randn_like(out)
    out.backward(grad)
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = sdpa_reference(q64, k64, v64, allowed)
    ref.backward(grad.double())
    for name, got, want in (("q", q.grad, q64.grad), ("k", k.grad, k64.grad), ("v", v.grad, v64.grad)):
        assert relative_error(got, want) < 1e-5, name


@pytest.mark.parametrize("b,h,lq,lk,d", [(1, 1, 1, 1, 32), (3, 5, 33, 33, 48), (2, 4, 130, 130, 128), (1, 2, 70, 70, 256)])
def test_shapes_and_head_dims(b, h, lq, lk, d):
    allowed = dense_rule("causal", [lq])
    q, k, v = random_qkv(b, h, lq, lk, d)
    out = tessera.attention(q, k, v, tessera.BlockMask.causal(lq))
    assert relative_error(out, sdpa_reference(q, k, v, allowed)) < 1e-5


def test_causal_tail_is_a_kv_cache_step():
    lq, lk = 9, 40
    allowed = torch.arange(lk)[None, :] <= (lk - lq + torch.arange(lq))[:, None]
    q, k, v = random_qkv(2, 2, lq, lk, 64)
    out = tessera.attention(q, k, v, tessera.BlockMask.causal_tail(lq, lk))
    assert relative_error(out, sdpa_reference(q, k, v, allowed)) < 1e-5


def test_intervals_with_empty_rows_give_zero_output_and_gradient():
    lq, lk = 50, 37
    g = torch.Generator().manual_seed(3)
    begin = torch.randint(-5, lk, (lq,), generator=g)
    end = begin + torch.randint(-3, 20, (lq,), generator=g)
    keys = torch.arange(lk)
    allowed = (keys[None, :] >= begin[:, None]) & (keys[None, :] < end[:, None])
    assert (~allowed.any(-1)).any(), "the draw should include rows with no key"
    mask = tessera.BlockMask.from_intervals(begin, end, lk, segments=[20, 30])
    q, k, v = random_qkv(1, 2, lq, lk, 32, requires_grad=True)
    out = tessera.attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert relative_error(out, sdpa_reference(q, k, v, allowed)) < 1e-5
    out.sum().backward()
    empty = ~allowed.any(-1)
    assert (q.grad[:, :, empty] == 0).all()


def test_dense_mask_matches_sdpa_forward_and_backward():
    lq, lk = 45, 60
    allowed = torch.rand(lq, lk, generator=torch.Generator().manual_seed(5)) < 0.3
    allowed[:, 0] = True  # SDPA's NaN rows aside
    q, k, v = random_qkv(2, 2, lq, lk, 64, requires_grad=True)
    out = tessera.attention(q, k, v, tessera.BlockMask.from_dense(allowed))
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = sdpa_reference(q64, k64, v64, allowed)
    assert relative_error(out, ref) < 1e-5
    out.backward(torch.ones_like(out))
    ref.backward(torch.ones_like(ref))
    assert relative_error(k.grad, k64.grad) < 1e-5


def test_explicit_scale_and_strided_inputs():
    # q, k, v as a transformer block makes them: views of one projection, heads not contiguous.
    b, length, h, d = 2, 30, 4, 32
    qkv = torch.randn(b, length, 3, h, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    allowed = dense_rule("block_causal", VAR_TINY)
    out = tessera.attention(q, k, v, tessera.BlockMask.block_causal(VAR_TINY), scale=0.3)
    assert relative_error(out, sdpa_reference(q, k, v, allowed, scale=0.3)) < 1e-5


def test_bfloat16_forward_and_gradients_within_bf16_error():
    segments = tessera.pyramid([1, 2, 3, 4, 5])
    allowed = dense_rule("block_causal", segments)
    q, k, v = random_qkv(2, 2, sum(segments), sum(segments), 64, dtype=torch.bfloat16, requires_grad=True)
    out = tessera.attention(q, k, v, tessera.BlockMask.block_causal(segments))
    assert out.dtype == torch.bfloat16
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = sdpa_reference(q64, k64, v64, allowed)
    assert relative_error(out, ref) < 2e-2
    grad = torch.randn(out.shape, dtype=torch.float64)
    out.backward(grad.to(torch.bfloat16))
    ref.backward(grad)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert got.dtype == torch.bfloat16
        assert relative_error(got, want) < 3e-2


def test_gradcheck_in_float64():
    # float64 runs the dense reference kernels through the same operator and autograd formula.
    segments = [2, 3, 4]
    q, k, v = random_qkv(1, 2, 9, 9, 4, dtype=torch.float64, requires_grad=True)
    mask = tessera.BlockMask.self_and_previous(segments)
    assert torch.autograd.gradcheck(lambda q, k, v: tessera.attention(q, k, v, mask), (q, k, v))


def test_operator_passes_torch_library_opcheck():
    # torch's own checks of a custom operator: schema, fake tensor, autograd registration, AOT.
    mask = tessera.BlockMask.block_causal(VAR_TINY)
    q, k, v = random_qkv(1, 2, 30, 30, 32, requires_grad=True)
    args = (q, k, v, mask.key_begin, mask.key_end, None, list(mask.segments), mask.key_length, None)
    torch.library.opcheck(torch.ops.tessera.attention_forward.default, args)


def test_block_mask_describes_itself():
    mask = tessera.BlockMask.block_causal(tessera.pyramid((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)))
    assert (mask.query_length, mask.key_length, mask.rule) == (680, 680, "block_causal")
    allowed = dense_rule("block_causal", tessera.pyramid((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)))
    assert math.isclose(mask.density(), allowed.double().mean().item())
    assert "block_causal" in repr(mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_kernel_forward_and_gradients_match_float64_sdpa(dtype):
    segments = tessera.pyramid([1, 2, 3, 4, 5, 6, 8, 10])
    allowed = dense_rule("block_causal", segments)
    q, k, v = (t.cuda().requires_grad_() for t in random_qkv(2, 4, sum(segments), sum(segments), 64, dtype=dtype))
    out = tessera.attention(q, k, v, tessera.BlockMask.block_causal(segments))
    q64, k64, v64 = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
    ref = sdpa_reference(q64, k64, v64, allowed)
    assert relative_error(out.cpu(), ref) < 2e-2
    grad = torch.randn(out.shape, dtype=torch.float64)
    out.backward(grad.to(dtype).cuda())
    ref.backward(grad)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert relative_error(got.cpu(), want) < 3e-2
