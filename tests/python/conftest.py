"""Shared fixtures of the Python package's tests (ctest label `python`; tests/CMakeLists.txt runs
them with the build tree's package on PYTHONPATH)."""

import os
import pathlib

import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("TESSERA_SOURCE_DIR", pathlib.Path(__file__).parents[2]))


# The variable naming each fixture's folder, as the C++ tests read them (tests/common/parity_dir.h).
PARITY_VARIABLES = {"var-tiny": "TESSERA_PARITY_DIR", "llamagen-tiny": "TESSERA_PARITY_LLAMAGEN_DIR",
                    "mar-tiny": "TESSERA_PARITY_MAR_DIR"}


def parity_dir(name: str) -> pathlib.Path:
    """A reference fixture folder: the folder its variable names (TESSERA_PARITY_DIR for var-tiny,
    TESSERA_PARITY_LLAMAGEN_DIR for llamagen-tiny) or ../shared/parity/<name>."""
    folder = os.environ.get(PARITY_VARIABLES.get(name, ""))
    return pathlib.Path(folder) if folder else SOURCE_DIR.parent / "shared" / "parity" / name


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
