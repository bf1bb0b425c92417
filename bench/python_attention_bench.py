#!/usr/bin/env python3
"""tessera.attention from Python against the two peers a PyTorch user would pick (issue 27).

For VAR's pyramid masks (block-causal: VAR's training mask; block-diagonal: HMAR's), at L = 680
(VAR-d16's 256-pixel pyramid) and L = 2240 (the 512-pixel one), forward and forward+backward,
times in one run:
  sdpa     F.scaled_dot_product_attention with the boolean [L, L] mask;
  flex     torch.nn.attention.flex_attention, compiled (torch.compile), with the same mask as its
           BlockMask (create_block_mask over a mask_mod that reads each row's key interval), so it
           skips the blocks no row sees;
  tessera  tessera.attention with tessera.BlockMask.
Each is timed twice, in paired rounds (every implementation once per round, median of 9 rounds
after 2 warm-up rounds): the attention call alone (q, k, v [B, 16, L, 64] in float32), and inside a
VAR-style transformer block (LayerNorm, qkv projection, attention, output projection, MLP; width
1024) as a training step would run it. Outputs are checked against SDPA before timing. Ratios are
sdpa/tessera and flex/tessera times of the same run; the goals: tessera >= 1.2x flex and
>= 0.8/density x sdpa for the attention call. Writes JSON (--out) with the CPU's name and flags.

    PYTHONPATH=build/python <venv>/bin/python bench/python_attention_bench.py --out build/bench
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import tessera

PYRAMIDS = {680: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 2240: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}
HEADS, HEAD_DIM = 16, 64
WIDTH = HEADS * HEAD_DIM
MASKS = ("block_causal", "block_diagonal")


def cpu_description():
    name, flags = platform.processor() or "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("unknown", "", platform.machine()):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")
    return {"name": name, "flags": [f for f in wanted if f in flags], "threads": torch.get_num_threads()}


def flex_mask(mask, length):
    begin, end = mask.key_begin, mask.key_end

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx >= begin[q_idx]) & (kv_idx < end[q_idx])

    return create_block_mask(mask_mod, None, None, length, length, device="cpu")


class Block(torch.nn.Module):
    """VAR's transformer block without its class conditioning: pre-norm attention and MLP."""

    def __init__(self, attend):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(WIDTH)
        self.qkv = torch.nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = torch.nn.Linear(WIDTH, WIDTH)
        self.norm2 = torch.nn.LayerNorm(WIDTH)
        self.fc1 = torch.nn.Linear(WIDTH, 4 * WIDTH)
        self.fc2 = torch.nn.Linear(4 * WIDTH, WIDTH)
        self.attend = attend

    def forward(self, x):
        b, length, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = self.attend(q, k, v).transpose(1, 2).reshape(b, length, WIDTH)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def run_case(length, rule, batch, warmup, repeat):
    segments = tessera.pyramid(PYRAMIDS[length])
    mask = getattr(tessera.BlockMask, rule)(segments)
    dense = mask.to_dense()
    flex_block_mask = flex_mask(mask, length)
    compiled_flex = torch.compile(flex_attention, dynamic=False)
    attend = {
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=dense),
        "flex": lambda q, k, v: compiled_flex(q, k, v, block_mask=flex_block_mask),
        "tessera": lambda q, k, v: tessera.attention(q, k, v, mask),
    }
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, HEADS, length, HEAD_DIM) for _ in range(3))
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=dense)
    record = {"length": length, "mask": rule, "density": mask.density(), "batch": batch, "seconds": {}}
    workloads = {}  # (implementation, what) -> a call
    for name, fn in attend.items():
        with torch.no_grad():
            error = ((fn(q, k, v).double() - reference).norm() / reference.norm()).item()
        if error > 1e-4:
            raise SystemExit(f"{name} disagrees with float64 SDPA on {rule} L={length}: relative error {error:.2e}")
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        torch.manual_seed(1)  # the same block weights and input for every implementation
        block = Block(fn)
        x = torch.randn(batch, length, WIDTH, requires_grad=True)

        def attention_forward(fn=fn):
            with torch.no_grad():
                fn(q, k, v)

        def attention_backward(fn=fn, qg=qg, kg=kg, vg=vg):
            fn(qg, kg, vg).sum().backward()

        def block_forward(block=block, x=x):
            with torch.no_grad():
                block(x)

        def block_backward(block=block, x=x):
            block(x).sum().backward()

        workloads[name, "attention_fwd"] = attention_forward
        workloads[name, "block_fwd"] = block_forward
        # FlexAttention has no CPU backward in torch 2.11 ("FlexAttention does not support
        # backward on CPU"): its forward+backward cells stay null there.
        if name != "flex" or q.is_cuda:
            workloads[name, "attention_fwd_bwd"] = attention_backward
            workloads[name, "block_fwd_bwd"] = block_backward
    # Paired rounds: each round times every implementation once, in turn, so that a slow spell of
    # a shared machine lands on all of them rather than on one.
    for what in ("attention_fwd", "attention_fwd_bwd", "block_fwd", "block_fwd_bwd"):
        names = [name for name in attend if (name, what) in workloads]
        samples = {name: [] for name in names}
        for round_ in range(warmup + repeat):
            for name in names:
                start = time.perf_counter()
                workloads[name, what]()
                if round_ >= warmup:
                    samples[name].append(time.perf_counter() - start)
        for name in attend:
            record["seconds"].setdefault(name, {})[what] = (
                statistics.median(samples[name]) if name in samples else None
            )
    times = record["seconds"]
    record["ratios"] = {
        f"{peer}/tessera": {
            key: (times[peer][key] / times["tessera"][key] if times[peer][key] is not None else None)
            for key in times["tessera"]
        }
        for peer in ("sdpa", "flex")
    }

    def measured(peer):
        return [r for k, r in record["ratios"][peer].items() if k.startswith("attention") and r is not None]

    record["goals"] = {
        "flex/tessera attention >= 1.2": min(measured("flex/tessera")) >= 1.2,
        "sdpa/tessera attention >= 0.8/density": min(measured("sdpa/tessera")) >= 0.8 / record["density"],
    }
    return record


def ratio_text(value):
    return "  n/a" if value is None else f"{value:.2f}x"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/bench", help="folder for python_attention.json")
    parser.add_argument("--quick", action="store_true", help="L = 680 only, fewer repeats")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = (680,) if args.quick else (680, 2240)
    warmup, repeat = (1, 3) if args.quick else (2, 9)
    records = []
    for length in lengths:
        for rule in MASKS:
            batch = 2 if length == 680 else 1
            record = run_case(length, rule, batch, warmup, repeat)
            records.append(record)
            r = record["ratios"]
            t = record["seconds"]["tessera"]
            print(
                f"L={length:5d} {rule:15s} density {record['density']:.3f}: tessera attention fwd "
                f"{t['attention_fwd'] * 1e3:7.1f} ms, fwd+bwd {t['attention_fwd_bwd'] * 1e3:7.1f} ms | "
                f"sdpa/tessera {ratio_text(r['sdpa/tessera']['attention_fwd'])} / "
                f"{ratio_text(r['sdpa/tessera']['attention_fwd_bwd'])}, flex/tessera "
                f"{ratio_text(r['flex/tessera']['attention_fwd'])} / {ratio_text(r['flex/tessera']['attention_fwd_bwd'])} | "
                f"block fwd, fwd+bwd: sdpa/tessera {ratio_text(r['sdpa/tessera']['block_fwd'])}, "
                f"{ratio_text(r['sdpa/tessera']['block_fwd_bwd'])}, flex/tessera {ratio_text(r['flex/tessera']['block_fwd'])}",
                flush=True,
            )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "python_attention.json")
    result = {
        "benchmark": "python_attention_bench",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "tessera": tessera.__version__,
        "cpu": cpu_description(),
        "dtype": "float32",
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "width": WIDTH,
        "records": records,
    }
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
