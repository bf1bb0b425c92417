"""Shared fixtures of the Python package's tests (ctest label `python`; tests/CMakeLists.txt runs
them with the build tree's package on PYTHONPATH)."""

import os
import pathlib

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("TESSERA_SOURCE_DIR", pathlib.Path(__file__).parents[2]))


def parity_dir(name: str) -> pathlib.Path:
    """A reference fixture folder: $TESSERA_PARITY_DIR/<name> or ../shared/parity/<name>."""
    root = os.environ.get("TESSERA_PARITY_DIR")
    base = pathlib.Path(root) if root else SOURCE_DIR.parent / "shared" / "parity"
    return base / name


def require(condition: bool, what: str) -> None:
    """Skips for a missing prerequisite, or fails under TESSERA_REQUIRE_ALL (as CI runs)."""
    if condition:
        return
    if os.environ.get("TESSERA_REQUIRE_ALL") == "1":
        pytest.fail(f"missing prerequisite: {what}")
    pytest.skip(f"missing prerequisite: {what}")


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    path = os.environ.get("TESSERA_CLI")
    require(path is not None and os.access(path, os.X_OK), "the tessera command ($TESSERA_CLI)")
    return pathlib.Path(path)
