"""docs/errors.md, section "Python", checked: each row is a case here that raises tessera.Error with
the row's quoted text, and each case has a row."""

import re

import pytest
import torch

import tessera
from conftest import SOURCE_DIR

MASKGIT = SOURCE_DIR / "models" / "maskgit_fashion_mnist.safetensors"


def documented_rows():
    rows = {}
    for line in (SOURCE_DIR / "docs" / "errors.md").read_text().splitlines():
        match = re.match(r"\| (P\d+) \|.*\| `(.*)` \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def qkv(shape, dtype=torch.float32):
    return [torch.randn(shape).to(dtype) for _ in range(3)]


def p3():
    q, k, v = qkv((1, 2, 30, 32))
    tessera.attention(q, k, v, tessera.BlockMask.block_causal(tessera.pyramid([1, 2, 3, 4, 5])))


def p4():
    q = torch.randn(1, 2, 8, 32)
    k, v = torch.randn(1, 2, 8, 32, dtype=torch.bfloat16), torch.randn(1, 2, 8, 32, dtype=torch.bfloat16)
    tessera.attention(q, k, v, tessera.BlockMask.causal(8))


CASES = {
    "P1": lambda: tessera.attention(*[torch.ones(1, 2, 8, 32, dtype=torch.int64)] * 3, tessera.BlockMask.causal(8)),
    "P2": lambda: tessera.attention(*qkv((2, 8, 32)), tessera.BlockMask.causal(8)),
    "P3": p3,
    "P4": p4,
    "P5": lambda: tessera.attention(*qkv((1, 1, 8, 300)), tessera.BlockMask.causal(8)),
    "P6": lambda: tessera.attention(*qkv((1, 1, 8, 32)), torch.ones(8, 8, dtype=torch.bool)),
    "P7": lambda: tessera.BlockMask.block_causal([4, 0, 9]),
    "P8": lambda: tessera.load_generator("/nonexistent/g.safetensors"),
    "P9": lambda: tessera.load_generator(MASKGIT).sample(torch.tensor([1]), temprature=0.9),
    "P10": lambda: tessera.load_generator(MASKGIT).sample(torch.tensor([1]), head={"temperature": 0}),
    "P11": lambda: tessera.load_generator(MASKGIT).sample(torch.tensor([1.0])),
    "P12": lambda: tessera.load_preset("var-d99"),
}


def test_every_row_has_a_case_and_every_case_a_row():
    assert sorted(documented_rows()) == sorted(CASES)


@pytest.mark.parametrize("row", sorted(CASES, key=lambda r: int(r[1:])))
def test_bad_input_raises_tessera_error_with_the_documented_message(row):
    with pytest.raises(tessera.Error) as raised:
        CASES[row]()
    assert documented_rows()[row] in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_import_refuses_a_torch_of_another_version(monkeypatch):
    from tessera import _build_info, _library

    monkeypatch.setattr(_build_info, "TORCH_VERSION", "2.10.0")
    with pytest.raises(ImportError, match=r"built against torch 2\.10\.0, but this environment has torch 2\.11\.0"):
        _library._check_torch()
