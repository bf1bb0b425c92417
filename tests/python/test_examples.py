"""The Python examples run as the docs show them (examples/python, docs/python.md)."""

import os
import subprocess
import sys

from conftest import SOURCE_DIR

EXAMPLES = SOURCE_DIR / "examples" / "python"


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], check=True, capture_output=True, text=True,
                          env=dict(os.environ)).stdout


def test_training_with_tessera_attention_follows_sdpa():
    out = run(EXAMPLES / "var_block_training.py", "--steps", "5")
    assert "largest relative difference of the losses" in out


def test_sampling_a_shipped_model_writes_a_grid(tmp_path):
    out = run(EXAMPLES / "sample_shipped_model.py", SOURCE_DIR / "models" / "var_fashion_mnist.safetensors",
              tmp_path / "grid.png", "--per-class", "2")
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "20 images" in out
