"""Loads libtessera_torch.so, after checking that the torch beside it is the one it was built for.

Note [Operators, not bindings]
The package's compiled part is one shared library that registers Tessera's kernels with PyTorch's
dispatcher (TORCH_LIBRARY operators, torch::class_ classes) and is loaded with
torch.ops.load_library. It uses LibTorch's C++ API only, not Python's: no Python headers, no
binding library, one binary for every Python version. Tensors cross without copies, the
operators are first-class citizens of torch.compile, autograd and torch.library, and the same
registration serves C++ programs that load the library. What it cannot survive is another
LibTorch: the C++ ABI of torch changes between releases, so the version check below comes first.
"""

from __future__ import annotations

import os

import torch

from . import _build_info


def _check_torch() -> None:
    have = torch.__version__.split("+")[0]
    if have != _build_info.TORCH_VERSION:
        raise ImportError(
            f"tessera {_build_info.TESSERA_VERSION} was built against torch "
            f"{_build_info.TORCH_VERSION}, but this environment has torch {torch.__version__}; "
            f"LibTorch's C++ ABI differs between releases. Install torch=={_build_info.TORCH_VERSION} "
            "or rebuild tessera here (pip install --no-build-isolation .)"
        )
    if _build_info.BUILT_WITH_CUDA and torch.version.cuda is None:
        raise ImportError(
            f"tessera was built with CUDA kernels against a CUDA build of torch "
            f"{_build_info.TORCH_VERSION}, but this torch ({torch.__version__}) has no CUDA; "
            "install the CUDA wheel of torch or rebuild tessera here"
        )


def load() -> None:
    """Checks torch's version, then registers the operators and classes (once per process)."""
    _check_torch()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _build_info.LIBRARY)
    if not os.path.isfile(path):
        raise ImportError(f"tessera: the operator library {path} is missing; rebuild the package")
    torch.ops.load_library(path)
