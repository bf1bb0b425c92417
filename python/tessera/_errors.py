"""tessera.Error: how the library's errors reach Python."""

from __future__ import annotations

import contextlib
from typing import Iterator


class Error(ValueError):
    """Bad input refused by Tessera; the message names what was wrong and what was expected.

    The C++ library throws ``tessera::Error``; its operators and classes turn it into
    ``ValueError`` at the boundary (python/csrc/boundary.h), and the package re-raises it as
    this subclass, so ``except ValueError`` catches it as well.
    """


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raises a ValueError from a Tessera operator or class method as tessera.Error."""
    try:
        yield
    except Error:
        raise
    except ValueError as e:
        raise Error(str(e)) from None
