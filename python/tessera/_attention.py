"""tessera.attention and tessera.BlockMask: masked attention as a PyTorch operator.

The kernels are Tessera's C++ ones (CPU: tiled and multi-threaded, float32 and bfloat16; CUDA:
bfloat16 and float16, head dim 64 or 128; float64 and anything else: the dense reference), which
skip the tiles a mask hides instead of computing and discarding them. They are registered as the
operators ``torch.ops.tessera.attention_forward`` and ``attention_backward``; this module gives
them a fake implementation (so ``torch.compile`` traces through without a graph break) and links
them as an autograd formula.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from ._errors import Error, translated_errors

__all__ = ["BlockMask", "attention", "pyramid"]

_RULES = (
    "causal",
    "bidirectional",
    "block_causal",
    "block_diagonal",
    "self_and_previous",
    "banded",
    "prefix_lm",
    "causal_tail",
    "intervals",
    "dense",
)


def pyramid(patch_nums: Sequence[int]) -> list[int]:
    """Segment lengths of a next-scale pyramid: scale s holds patch_nums[s]**2 tokens.

    VAR's ``(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)`` gives 10 segments and 680 tokens.
    """
    lengths = [int(p) * int(p) for p in patch_nums]
    if not lengths or any(p < 1 for p in patch_nums):
        raise Error(f"tessera.pyramid: expected one or more patch counts >= 1, got {list(patch_nums)}")
    return lengths


def _segments(length_or_segments: Union[int, Sequence[int]], what: str) -> list[int]:
    if isinstance(length_or_segments, bool):
        raise Error(f"tessera.BlockMask.{what}: expected a length or a list of segment lengths, got a bool")
    if isinstance(length_or_segments, int):
        return [int(length_or_segments)]
    try:
        return [int(n) for n in length_or_segments]
    except TypeError:
        raise Error(
            f"tessera.BlockMask.{what}: expected a length or a list of segment lengths, got "
            f"{type(length_or_segments).__name__}"
        ) from None


class BlockMask:
    """Which keys each query row may attend to, in a form the kernels skip work with.

    Every structured mask gives query row q one interval of visible keys
    ``[key_begin[q], key_end[q])``; the query segments (a VAR pyramid's scales, a prefix and a
    body) say where the kernels cut their query tiles, so block-structured masks cost their element
    density rather than that of a square tile grid. Masks that are not intervals come from a
    boolean tensor (``from_dense``): exact, but every visible tile is checked element by element.

    Build one with the class methods (``causal``, ``bidirectional``, ``block_causal``,
    ``block_diagonal``, ``self_and_previous``, ``banded``, ``prefix_lm``, ``causal_tail``,
    ``from_intervals``, ``from_dense``) and reuse it across calls; it is immutable.
    """

    __slots__ = ("_rule", "_segments", "_segment_list", "_key_length", "_key_begin", "_key_end", "_dense")

    def __init__(
        self,
        rule: str,
        segments: Sequence[int],
        key_length: int,
        key_begin: torch.Tensor,
        key_end: torch.Tensor,
        dense: Optional[torch.Tensor],
    ) -> None:
        # Internal: the class methods build masks; the operator checks every field again.
        assert rule in _RULES, rule
        self._rule = rule
        self._segments = tuple(int(n) for n in segments)
        self._segment_list = list(self._segments)  # the operators' int[] argument, made once
        self._key_length = int(key_length)
        self._key_begin = key_begin
        self._key_end = key_end
        self._dense = dense

    # --- rules over segments (query length == key length == sum of the segments) ---
    @classmethod
    def _rule_mask(cls, rule: str, segments: list[int], band: int = 0, key_length: int = 0) -> "BlockMask":
        with translated_errors():
            begin, end = torch.ops.tessera.block_mask(rule, segments, band, key_length)
        return cls(rule, segments, key_length or sum(segments), begin, end, None)

    @classmethod
    def causal(cls, length_or_segments: Union[int, Sequence[int]]) -> "BlockMask":
        """Row q sees keys [0, q]. A list of segment lengths only sets the query tiling."""
        return cls._rule_mask("causal", _segments(length_or_segments, "causal"))

    @classmethod
    def bidirectional(cls, length_or_segments: Union[int, Sequence[int]]) -> "BlockMask":
        """Every row sees every key."""
        return cls._rule_mask("bidirectional", _segments(length_or_segments, "bidirectional"))

    @classmethod
    def block_causal(cls, segments: Sequence[int]) -> "BlockMask":
        """Row q sees its own and every earlier segment: VAR's training mask
        (``BlockMask.block_causal(tessera.pyramid((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)))``)."""
        return cls._rule_mask("block_causal", _segments(segments, "block_causal"))

    @classmethod
    def block_diagonal(cls, segments: Sequence[int]) -> "BlockMask":
        """Row q sees its own segment only: HMAR's Markovian mask."""
        return cls._rule_mask("block_diagonal", _segments(segments, "block_diagonal"))

    @classmethod
    def self_and_previous(cls, segments: Sequence[int]) -> "BlockMask":
        """Row q sees its own segment and the one before it."""
        return cls._rule_mask("self_and_previous", _segments(segments, "self_and_previous"))

    @classmethod
    def banded(cls, length_or_segments: Union[int, Sequence[int]], band: int) -> "BlockMask":
        """Row q sees keys k with |q - k| <= band (MAGNeT's local attention)."""
        return cls._rule_mask("banded", _segments(length_or_segments, "banded"), band=int(band))

    @classmethod
    def prefix_lm(cls, segments: Sequence[int]) -> "BlockMask":
        """The first segment sees itself bidirectionally; the rest is causal."""
        return cls._rule_mask("prefix_lm", _segments(segments, "prefix_lm"))

    @classmethod
    def causal_tail(cls, query_length: int, key_length: int) -> "BlockMask":
        """The last ``query_length`` positions of a causal ``key_length`` sequence: a decoding step
        against a KV cache (row q sees keys [0, key_length - query_length + q + 1))."""
        return cls._rule_mask("causal_tail", [int(query_length)], key_length=int(key_length))

    @classmethod
    def from_intervals(
        cls,
        key_begin: Union[torch.Tensor, Sequence[int]],
        key_end: Union[torch.Tensor, Sequence[int]],
        key_length: int,
        segments: Optional[Sequence[int]] = None,
    ) -> "BlockMask":
        """Row q sees keys [key_begin[q], key_end[q]) (clamped to [0, key_length]; begin >= end
        means no key). ``segments``, when given, cut the query tiles and must sum to the rows."""
        begin = torch.as_tensor(key_begin, dtype=torch.int64).cpu().contiguous()
        end = torch.as_tensor(key_end, dtype=torch.int64).cpu().contiguous()
        if begin.dim() != 1 or end.shape != begin.shape or begin.numel() == 0:
            raise Error(
                "tessera.BlockMask.from_intervals: key_begin and key_end must be 1-D with one entry "
                f"per query row each, got shapes {list(begin.shape)} and {list(end.shape)}"
            )
        if int(key_length) < 1:
            raise Error(f"tessera.BlockMask.from_intervals: key_length must be >= 1, got {key_length}")
        rows = begin.numel()
        segs = _segments(segments, "from_intervals") if segments is not None else [rows]
        if sum(segs) != rows or any(n < 1 for n in segs):
            raise Error(
                f"tessera.BlockMask.from_intervals: the segments {segs} must be >= 1 each and sum "
                f"to the {rows} query rows"
            )
        begin = begin.clamp(0, int(key_length))
        end = torch.maximum(end.clamp(0, int(key_length)), begin)
        return cls("intervals", segs, key_length, begin, end, None)

    @classmethod
    def from_dense(cls, allowed: torch.Tensor) -> "BlockMask":
        """Any boolean [Lq, Lk] mask (True = may attend), as SDPA's ``attn_mask`` takes it. The slow
        path: exact, but the kernels check every element of each tile the mask touches."""
        if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool or allowed.dim() != 2:
            what = (
                f"a {allowed.dtype} tensor of {allowed.dim()} dimensions"
                if isinstance(allowed, torch.Tensor)
                else type(allowed).__name__
            )
            raise Error(f"tessera.BlockMask.from_dense: expected a 2-D bool tensor [Lq, Lk], got {what}")
        if allowed.numel() == 0:
            raise Error(f"tessera.BlockMask.from_dense: the mask is empty, shape {list(allowed.shape)}")
        dense = allowed.detach().cpu().contiguous()
        rows, keys = dense.shape
        # Each row's first and last visible key, as the kernels bound the row's tiles by them.
        index = torch.arange(keys)
        begin = torch.where(dense, index, keys).amin(dim=1)
        end = torch.where(dense, index + 1, 0).amax(dim=1)
        begin = torch.minimum(begin, end)
        return cls("dense", [rows], keys, begin, end, dense)

    # --- what the mask is ---
    @property
    def rule(self) -> str:
        """The rule it was built with: "causal", "block_causal", ..., "intervals" or "dense"."""
        return self._rule

    @property
    def query_length(self) -> int:
        """Lq, the number of query rows."""
        return int(self._key_begin.numel())

    @property
    def key_length(self) -> int:
        """Lk, the number of keys."""
        return self._key_length

    @property
    def segments(self) -> tuple[int, ...]:
        """The query segments (where the kernels cut query tiles)."""
        return self._segments

    @property
    def key_begin(self) -> torch.Tensor:
        """int64 [Lq]: the first key row q may see (a dense mask: the first it does see)."""
        return self._key_begin

    @property
    def key_end(self) -> torch.Tensor:
        """int64 [Lq]: one past the last key row q may see."""
        return self._key_end

    def to_dense(self) -> torch.Tensor:
        """bool [Lq, Lk] on the CPU (True = may attend): SDPA's ``attn_mask`` for this mask."""
        if self._dense is not None:
            return self._dense.clone()
        keys = torch.arange(self._key_length)
        return (keys >= self._key_begin[:, None]) & (keys < self._key_end[:, None])

    def density(self) -> float:
        """The fraction of (query, key) pairs the mask lets through."""
        if self._dense is not None:
            visible = int(self._dense.sum())
        else:
            visible = int((self._key_end - self._key_begin).sum())
        return visible / (self.query_length * self._key_length)

    def __repr__(self) -> str:
        return (
            f"tessera.BlockMask({self._rule}, {self.query_length}x{self._key_length}, "
            f"{len(self._segments)} segments, density {self.density():.3f})"
        )


def _mask_arguments(mask: BlockMask) -> tuple:
    # What the operators take for a mask (Note [The mask as tensors] in python/csrc/attention_ops.cpp).
    return (mask._key_begin, mask._key_end, mask._dense, mask._segment_list, mask._key_length)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockMask,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Scaled dot-product attention under a BlockMask, differentiable.

    q [B, H, Lq, D], k and v [B, H, Lk, D], of one dtype and device (CPU: float32 or bfloat16 run
    the tiled kernel, D from 32 to 256, float64 the dense reference; CUDA: bfloat16 or float16
    with D 64 or 128 run the CUDA kernel, anything else the reference); the mask is for Lq x Lk.
    ``scale`` defaults to 1/sqrt(D). Returns q's shape and dtype, contiguous. A query row that
    sees no key gets output 0 (never NaN) and gradient 0.

    A drop-in for ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to_dense())`` apart from
    such empty rows (where SDPA gives NaN). Gradients flow to q, k and v through Tessera's
    backward kernels; under ``torch.compile`` the call stays one operator in the graph.
    Bad input raises tessera.Error naming what was wrong.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise Error(f"tessera.attention: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not isinstance(mask, BlockMask):
        raise Error(
            f"tessera.attention: mask must be a tessera.BlockMask, got {type(mask).__name__} "
            "(a boolean tensor: tessera.BlockMask.from_dense(mask))"
        )
    if scale is not None:
        scale = float(scale)
        if not math.isfinite(scale):
            raise Error(f"tessera.attention: the softmax scale must be finite, got {scale}")
    # A plain try rather than translated_errors(): this runs once per layer and decoding step, and
    # a context manager costs microseconds there.
    try:
        return torch.ops.tessera.attention_forward(q, k, v, *_mask_arguments(mask), scale)[0]
    except ValueError as e:
        if isinstance(e, Error) or torch.compiler.is_compiling():
            raise
        raise Error(str(e)) from None


# --- torch.compile: shapes of the outputs without running the kernels ---
@torch.library.register_fake("tessera::attention_forward")
def _attention_forward_fake(q, k, v, key_begin, key_end, allowed, query_segments, key_length, scale):
    torch._check(q.dim() == 4, lambda: f"tessera.attention: q must be 4-D, got {q.dim()} dimensions")
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    return out, lse


@torch.library.register_fake("tessera::attention_backward")
def _attention_backward_fake(q, k, v, out, lse, grad_out, key_begin, key_end, allowed, query_segments, key_length, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


# --- autograd: the forward saves what the backward kernel reads ---
def _setup_context(ctx, inputs, output):
    q, k, v, key_begin, key_end, allowed, query_segments, key_length, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_begin, key_end, allowed)
    ctx.query_segments = query_segments
    ctx.key_length = key_length
    ctx.scale = scale


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, key_begin, key_end, allowed = ctx.saved_tensors
    dq, dk, dv = torch.ops.tessera.attention_backward(
        q, k, v, out, lse, grad_out, key_begin, key_end, allowed, ctx.query_segments, ctx.key_length, ctx.scale
    )
    return dq, dk, dv, None, None, None, None, None, None


torch.library.register_autograd("tessera::attention_forward", _backward, setup_context=_setup_context)
