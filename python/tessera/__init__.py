"""Tessera: masked and autoregressive generative modelling on LibTorch, from Python.

- ``tessera.attention(q, k, v, mask)`` with ``tessera.BlockMask``: attention under VAR's, HMAR's
  and other structured masks as a PyTorch operator (autograd, torch.compile), on Tessera's CPU
  and CUDA kernels.
- ``tessera.load_generator(path)``, ``tessera.load_preset(...)``, ``tessera.load_tokenizer(path)``:
  Tessera's generators and tokenizers, sampling into uint8 image tensors.

docs/python.md has the guide; every function's docstring says what its C++ counterpart does.
"""

from . import _library

_library.load()

from ._attention import BlockMask, attention, pyramid  # noqa: E402
from ._build_info import TESSERA_VERSION as __version__  # noqa: E402
from ._errors import Error  # noqa: E402
from ._generation import (  # noqa: E402
    Generator,
    Tokenizer,
    load_generator,
    load_preset,
    load_tokenizer,
    write_image_grid,
)

__all__ = [
    "BlockMask",
    "Error",
    "Generator",
    "Tokenizer",
    "attention",
    "load_generator",
    "load_preset",
    "load_tokenizer",
    "pyramid",
    "write_image_grid",
    "__version__",
]
