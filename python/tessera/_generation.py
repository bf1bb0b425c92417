"""Generators and tokenizers: sampling Tessera's models from Python.

The objects are thin wrappers around the TorchScript classes torch.classes.tessera.Generator and
torch.classes.tessera.Tokenizer (python/csrc/generation_classes.cpp), which hold the C++ objects
``tessera sample`` uses: the same seed and options give the same tokens and images.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from ._errors import Error, translated_errors

__all__ = ["Generator", "Tokenizer", "load_generator", "load_preset", "load_tokenizer", "write_image_grid"]

PathLike = Union[str, "os.PathLike[str]"]

# The sections of a sampling request (docs/cli.md, `tessera sample --sampling`).
_SAMPLING_SECTIONS = ("guidance", "head", "schedule")


def _path(path: PathLike, what: str) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise Error(f"{what}: expected a path, got {type(path).__name__}") from None


class Generator:
    """A tokenizer, backbone, head and schedule that sample together (C++ ``tessera::Generator``).

    Made by ``tessera.load_generator`` (a generator file: the shipped models, ``tessera train``'s
    output, converted checkpoints) or ``tessera.load_preset`` (VAR / HMAR from the reference's
    state dicts). Sampling runs on the CPU threads torch uses (``torch.set_num_threads``).
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional generator; 0 for an unconditional one."""
        return int(self._handle.num_classes())

    @property
    def image_size(self) -> int:
        """Side of the square images it samples, in pixels."""
        return int(self._handle.image_size())

    @property
    def image_channels(self) -> int:
        """Channels of the images (1 grey, 3 RGB)."""
        return int(self._handle.image_channels())

    @property
    def config(self) -> dict:
        """The generator's configuration (GeneratorConfig) as a dictionary, as files record it."""
        with translated_errors():
            return json.loads(self._handle.config_json())

    @property
    def precision(self) -> str:
        """The inference precision: "fp32", "bf16" or "int8" (docs/performance.md)."""
        return str(self._handle.precision())

    def set_precision(self, precision: str) -> None:
        """Samples from now on in "fp32", "bf16", "int8" or "auto", as ``tessera sample
        --precision`` does (bf16 rounds the weights; int8 quantizes the Linear layers)."""
        with translated_errors():
            self._handle.set_precision(str(precision))

    @property
    def tokenizer(self) -> "Tokenizer":
        """The generator's tokenizer (shared, not copied)."""
        return Tokenizer(self._handle.tokenizer())

    def sample(
        self,
        labels: Optional[Union[torch.Tensor, Sequence[int]]] = None,
        *,
        seed: int = 0,
        count: int = 0,
        first_index: int = 0,
        reference_seeding: bool = False,
        reference_multinomial: str = "inverse_cdf",
        return_tokens: bool = False,
        **sampling: Mapping[str, Any],
    ) -> Union[torch.Tensor, tuple[torch.Tensor, list[torch.Tensor]]]:
        """Samples images: uint8 [B, C, H, W], mapped from [-1, 1] as ``tessera sample``'s PNGs are.

        ``labels``: int64 class labels [B] (None for an unconditional generator, which then
        samples ``count`` images). ``seed``: sample i of the request draws from its own stream
        derived from (seed, first_index + i), so a request split into batches gives the same
        images as one batch. ``reference_seeding``: one stream for the batch, drawn as the
        reference samplers draw it (bit-compatible tokens with VAR or LlamaGen for the same seed
        and batch), with torch.multinomial as ``reference_multinomial`` names it:
        ``"inverse_cdf"`` (PyTorch <= 1.13, VAR's fixture) or ``"exponential_race"`` (PyTorch 2,
        LlamaGen's fixture and a reference run today).
        ``sampling``: the sections of ``tessera sample --sampling``, e.g.
        ``guidance={"scale": 4}, head={"temperature": 0.9, "top_k": 600}, schedule={"steps": 8}``,
        patched over the generator's defaults. ``return_tokens``: also return the tokens, one
        tensor per scale (coarse to fine). Bad options raise tessera.Error naming the key.
        """
        unknown = sorted(set(sampling) - set(_SAMPLING_SECTIONS))
        if unknown:
            raise Error(
                f"Generator.sample: unknown option(s) {unknown}; the sampling sections are "
                f"{list(_SAMPLING_SECTIONS)} (as in tessera sample --sampling), plus seed, count, "
                "first_index, reference_seeding, reference_multinomial and return_tokens"
            )
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(list(labels), dtype=torch.int64)
        if isinstance(labels, torch.Tensor) and labels.dtype != torch.int64:
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise Error(f"Generator.sample: labels must be integers, got {labels.dtype}")
            labels = labels.to(torch.int64)
        patch = json.dumps(sampling) if sampling else ""
        with translated_errors():
            images, tokens = self._handle.sample(
                labels, int(seed), int(first_index), bool(reference_seeding),
                str(reference_multinomial), patch, int(count)
            )
        return (images, list(tokens)) if return_tokens else images

    def teacher_forcing_logits(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """VAR's ``forward(label, var_input)`` for a next-scale generator: the backbone under the
        block-causal mask over its scales and the discrete head, in evaluation mode, without
        autograd. ``inputs``: the teacher-forcing input [B, L - 1, C] (VAR's
        ``idxBl_to_var_input``); returns logits [B, L, V]."""
        with translated_errors():
            return self._handle.teacher_forcing_logits(inputs, labels)

    def decode(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tokens (one tensor per scale, as ``sample(return_tokens=True)`` gives them) to uint8
        images, decoded as ``sample`` decodes them."""
        with translated_errors():
            return self._handle.decode(list(tokens))

    def __repr__(self) -> str:
        return (
            f"tessera.Generator({self.image_size}x{self.image_size}x{self.image_channels}, "
            f"{self.num_classes} classes, {self.precision})"
        )


class Tokenizer:
    """Images to tokens and back (C++ ``tessera::Tokenizer``): VQ-VAEs, multi-scale VQ-VAEs (VAR),
    KL-VAEs (MAR), patch tokenizers."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    @property
    def config(self) -> dict:
        """The tokenizer's configuration (TokenizerConfig) as a dictionary."""
        with translated_errors():
            return json.loads(self._handle.config_json())

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Float images [B, C, H, W] in [-1, 1] to tokens: one tensor per scale, coarse to fine
        (int64 ids [B, h*w], or float vectors [B, h*w, C] for continuous tokenizers)."""
        if not isinstance(images, torch.Tensor):
            raise Error(f"Tokenizer.encode: images must be a torch.Tensor, got {type(images).__name__}")
        with translated_errors():
            return list(self._handle.encode(images))

    def decode(self, tokens: Sequence[torch.Tensor], height: int, width: Optional[int] = None) -> torch.Tensor:
        """Tokens (as ``encode`` returns them) of height x width images back to float images
        [B, C, height, width] in [-1, 1]."""
        with translated_errors():
            return self._handle.decode(list(tokens), int(height), int(height if width is None else width))

    def __repr__(self) -> str:
        return f"tessera.Tokenizer({self.config.get('kind', '?')})"


def load_generator(path: PathLike) -> Generator:
    """A generator file (``models/*.safetensors``, ``tessera train``'s, ``tessera convert``'s)."""
    path = _path(path, "tessera.load_generator")
    with translated_errors():
        return Generator(torch.classes.tessera.Generator.load(path))


def _tensor_dict(state_dict: Optional[Mapping[str, torch.Tensor]], what: str) -> dict[str, torch.Tensor]:
    if state_dict is None:
        return {}
    if not isinstance(state_dict, Mapping):
        raise Error(f"tessera.load_preset: {what} must be a dict of tensors, got {type(state_dict).__name__}")
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise Error(f"tessera.load_preset: {what}[{key!r}] is a {type(value).__name__}, not a tensor")
        tensors[str(key)] = value.detach()
    return tensors


def load_preset(
    name: Optional[str] = None,
    *,
    architecture: Optional[Mapping[str, Any]] = None,
    transformer: Optional[Mapping[str, torch.Tensor]] = None,
    vae: Optional[Mapping[str, torch.Tensor]] = None,
    seed: int = 0,
) -> Generator:
    """A published VAR / HMAR / LlamaGen / MAR architecture with the reference's weights, straight
    from state dicts.

    ``name``: a preset ("var-d16" ... "var-d30", "hmar-d16" ..., "llamagen-b" ... "llamagen-3b",
    "llamagen-b-384" ...; the names ``tessera info --preset`` takes); or ``architecture``: VAR's
    architecture as the keys tools/convert_checkpoint.py records (depth, width, heads, patch_nums,
    vocab_size, Cvae, ch, share_quant_resi, num_classes, optionally shared_aln, attn_l2_norm,
    norm_eps, and the sampling defaults cfg, top_k, top_p), HMAR when ``transformer`` holds HMAR's
    mask token; or LlamaGen's (gpt.dim, gpt.n_layer, gpt.n_head, gpt.vocab_size, gpt.num_classes,
    grid_size, ..., and cfg_scale, cfg_interval, temperature, top_k, top_p; docs/compat.md); MAR
    ("mar-b", "mar-l", "mar-h") reads its architecture from ``transformer``'s tensors, and
    ``architecture`` then gives head counts and sampling settings (mar.encoder_num_heads,
    sample.cfg, ...), when it is not a published size.
    ``transformer``: the reference's state dict (e.g. ``torch.load("var_d16.pth",
    weights_only=True)``, LlamaGen's checkpoint's ``"model"``, MAR's ``"model_ema"``); ``vae``:
    the tokenizer's state dict (VAR's ``vae_ch160v4096z32.pth``, LlamaGen's ``vq_ds16_c2i.pt``'s
    or MAR's ``kl16.ckpt``'s ``"model"``). Either may
    be left out for random weights (``seed``), for speed measurements. Wrong keys or shapes raise
    tessera.Error naming them.
    """
    if (name is None) == (architecture is None):
        raise Error("tessera.load_preset: give either a preset name or an architecture")
    arch = {str(k): (",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v))
            for k, v in (architecture or {}).items()}
    with translated_errors():
        return Generator(
            torch.classes.tessera.Generator.load_preset(
                name or "", arch, _tensor_dict(transformer, "transformer"), _tensor_dict(vae, "vae"), int(seed)
            )
        )


def load_tokenizer(path: PathLike) -> Tokenizer:
    """A tokenizer file (``tessera train-tokenizer``'s output)."""
    path = _path(path, "tessera.load_tokenizer")
    with translated_errors():
        return Tokenizer(torch.classes.tessera.Tokenizer.load(path))


def write_image_grid(
    path: PathLike,
    images: torch.Tensor,
    *,
    columns: int = 8,
    padding: int = 2,
    pad_value: int = 0,
    upscale: int = 1,
) -> None:
    """Writes images [N, C, H, W] (uint8, or float in [-1, 1]) as a PNG grid, atomically, as
    ``tessera sample`` writes its grids (``columns`` tiles per row, ``padding`` pixels of
    ``pad_value`` between them, each tile enlarged ``upscale`` times)."""
    path = _path(path, "tessera.write_image_grid")
    if not isinstance(images, torch.Tensor):
        raise Error(f"tessera.write_image_grid: images must be a torch.Tensor, got {type(images).__name__}")
    with translated_errors():
        torch.ops.tessera.write_image_grid(path, images, int(columns), int(padding), int(pad_value), int(upscale))
