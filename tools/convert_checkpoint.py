#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth) into a safetensors file that Tessera loads.

    python tools/convert_checkpoint.py var_d16.pth var_d16.safetensors
    python tools/convert_checkpoint.py ckpt.pth out.safetensors --key model_ema
    python tools/convert_checkpoint.py ckpt.pth out.safetensors --metadata depth=16 width=1024

Key names are kept exactly (Tessera's parts carry the reference names, docs/compat.md). The
checkpoint is read with torch.load(weights_only=True): a pickle that needs anything beyond tensors
and plain containers is refused instead of executed. The one class allowed besides is
argparse.Namespace, a plain attribute holder that LlamaGen's and MAR's training scripts save their
arguments in (`"args": args`). Wrappers are unwrapped: a dict under one of
`model_ema`, `ema`, `model`, `state_dict`, `module` (or VAR's trainer state `trainer.var_wo_ddp`),
and DistributedDataParallel's `module.` key prefix. When several wrappers hold state dicts, name
one with --key (a dotted path). Anything else that is not a tensor is an error naming its key.
The file is written atomically (a temporary file in the same folder, then a rename), with
`__metadata__` holding the source file name and any --metadata pairs.

Needs only the project venv's torch (no numpy, no safetensors package).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import struct
import sys
import tempfile

import torch

# The wrappers tried, in this order, when --key is not given.
WRAPPER_KEYS = ("model_ema", "ema", "model", "state_dict", "module")

DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class ConversionError(Exception):
    pass


def is_state_dict(value) -> bool:
    return isinstance(value, dict) and len(value) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())


def select(checkpoint, key_path: str | None, source: str):
    """The state dict inside `checkpoint` (see the module docstring)."""
    if key_path:
        node = checkpoint
        walked = []
        for part in key_path.split("."):
            if not isinstance(node, dict) or part not in node:
                keys = sorted(node.keys()) if isinstance(node, dict) else []
                raise ConversionError(
                    f"{source}: no '{part}' under '{'.'.join(walked) or '<top>'}' "
                    f"(keys there: {', '.join(map(str, keys)) or 'none, not a dict'})")
            node = node[part]
            walked.append(part)
        return node, key_path
    node, path = checkpoint, []
    while isinstance(node, dict) and not is_state_dict(node):
        candidates = [k for k in WRAPPER_KEYS if k in node and isinstance(node[k], dict)]
        if "trainer" in node and isinstance(node["trainer"], dict) and "var_wo_ddp" in node["trainer"]:
            candidates.append("trainer.var_wo_ddp")
        holding = [k for k in candidates if _holds_state_dict(node, k)]
        if len(holding) > 1:
            raise ConversionError(
                f"{source}: several state dicts under {', '.join(holding)}"
                f"{' (in ' + '.'.join(path) + ')' if path else ''}; choose one with --key")
        if not candidates:
            break
        key = holding[0] if holding else candidates[0]
        for part in key.split("."):
            node = node[part]
        path.append(key)
    return node, ".".join(path)


def _holds_state_dict(node, dotted: str) -> bool:
    for part in dotted.split("."):
        node = node[part]
    while isinstance(node, dict) and not is_state_dict(node):
        inner = [k for k in WRAPPER_KEYS if k in node and isinstance(node[k], dict)]
        if len(inner) != 1:
            return False
        node = node[inner[0]]
    return is_state_dict(node)


def tensors_of(state, source: str, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise ConversionError(
            f"{source}: {where or 'the checkpoint'} is a {type(state).__name__}, not a dict of "
            "tensors (a state dict)")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ConversionError(f"{source}: key {key!r} is not a string")
        if not torch.is_tensor(value):
            raise ConversionError(
                f"{source}: '{key}' in {where or 'the checkpoint'} is a {type(value).__name__}, "
                f"not a tensor; pick the state dict with --key (top-level keys: "
                f"{', '.join(sorted(map(str, state.keys())))})")
        if value.dtype not in DTYPES:
            raise ConversionError(f"{source}: '{key}' has dtype {value.dtype}, which safetensors "
                                  f"cannot hold here (supported: {', '.join(map(str, DTYPES))})")
        out[key] = value
    if not out:
        raise ConversionError(f"{source}: {where or 'the checkpoint'} holds no tensors")
    # DistributedDataParallel saves every key under `module.`.
    if all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    header = {"__metadata__": metadata}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)  # the format's 8-byte alignment
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".convert_checkpoint.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for name in names:
                f.write(tensor_bytes(tensors[name]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def convert(source: str, destination: str, key: str | None, extra: dict[str, str]) -> str:
    if not os.path.isfile(source):
        raise ConversionError(f"{source}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... by version
        raise ConversionError(
            f"{source}: torch.load(weights_only=True) refused it ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); the file is not a plain checkpoint of "
            "tensors and containers") from e
    state, where = select(checkpoint, key, source)
    tensors = tensors_of(state, source, where)
    metadata = {"tessera.converted_from": os.path.basename(source)}
    if where:
        metadata["tessera.converted_key"] = where
    metadata.update(extra)
    write_safetensors(destination, tensors, metadata)
    return f"wrote {destination}: {len(tensors)} tensors" + (f" (from '{where}')" if where else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a .pth / .pt checkpoint")
    parser.add_argument("destination", help="the .safetensors file to write")
    parser.add_argument("--key", help="dotted path of the state dict inside the checkpoint, "
                        "e.g. model_ema or trainer.var_wo_ddp")
    parser.add_argument("--metadata", nargs="*", default=[], metavar="KEY=VALUE",
                        help="strings stored in __metadata__ (e.g. depth=16 patch_nums=1,2,3)")
    args = parser.parse_args(argv)
    extra = {}
    for item in args.metadata:
        if "=" not in item:
            print(f"convert_checkpoint: --metadata wants KEY=VALUE, got '{item}'", file=sys.stderr)
            return 2
        k, v = item.split("=", 1)
        extra[k] = v
    try:
        print(convert(args.source, args.destination, args.key, extra))
    except ConversionError as e:
        print(f"convert_checkpoint: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
