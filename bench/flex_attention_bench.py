#!/usr/bin/env python3
"""FlexAttention with the masks of `attention_bench --device cuda` (issue 13), on the GPU.

Same configurations (bf16, H = 16, D = 128, batch = max(1, 8 * 2240 // L), L in {2240, 9451},
the VAR pyramids of bench/attention_bench_cuda.h), same element rule: every mask is the per-row
key interval [lo(q), hi(q)) of BlockMask's interval rules, given to create_block_mask as one
mask_mod that reads two index tensors, so FlexAttention skips the blocks no row sees, runs the
blocks every row sees without the mask_mod, and applies it in the rest (its block size is 128,
Tessera's 64). One mask_mod over fixed-size tensors refilled per configuration, so torch.compile
builds the kernels once per length and pass rather than once per mask.

Times with triton.testing.do_bench (median, CUDA events), checks each output against SDPA with the
boolean mask, and writes a JSON list (see --out). Standard library + torch + triton only.
"""

import argparse
import json
import sys
import time

PYRAMIDS = {
    2240: [1, 2, 3, 4, 6, 9, 13, 18, 24, 32],
    9451: [1, 2, 3, 4, 6, 9, 13, 18, 24, 32, 39, 47, 59],
}
HEADS, DIM = 16, 128
MASKS = ["block_diagonal", "block_causal", "causal", "bidirectional"]
FWD_BWD_FLOP_FACTOR = 3.5  # as attention_bench


def batch_for(length):
    return max(1, 8 * 2240 // length)


def intervals(rule, length, torch, device):
    """Per-row [lo, hi) of the rule over the pyramid of `length` (BlockMask's definitions)."""
    sizes = [p * p for p in PYRAMIDS[length]]
    assert sum(sizes) == length
    starts = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)
    ends = torch.tensor(sizes, device=device).cumsum(0)
    seg = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                  torch.tensor(sizes, device=device))
    q = torch.arange(length, device=device)
    if rule == "block_diagonal":
        return starts[seg], ends[seg]
    if rule == "block_causal":
        return torch.zeros_like(q), ends[seg]
    if rule == "causal":
        return torch.zeros_like(q), q + 1
    if rule == "bidirectional":
        return torch.zeros_like(q), torch.full_like(q, length)
    raise ValueError(rule)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="L = 2240 only")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="skip the remaining configurations after this many seconds")
    args = parser.parse_args()

    records = []

    def write():
        with open(args.out, "w") as f:
            json.dump(records, f, indent=2)

    try:
        import torch
        import triton.testing
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as e:  # noqa: BLE001 - report whatever stops the import
        records.append({"error": f"FlexAttention unavailable: {e!r}"})
        write()
        print(f"flex_attention_bench: {e!r}", file=sys.stderr)
        return 0

    device = "cuda"
    start = time.monotonic()
    max_len = max(PYRAMIDS)
    lo_buf = torch.zeros(max_len, dtype=torch.int64, device=device)
    hi_buf = torch.zeros(max_len, dtype=torch.int64, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        return (lo_buf[q_idx] <= kv_idx) & (kv_idx < hi_buf[q_idx])

    flex = torch.compile(flex_attention)
    lengths = [2240] if args.quick else [2240, 9451]
    print(f"flex_attention_bench: torch {torch.__version__}, bf16, H={HEADS}, D={DIM}")
    print(f"{'mask':<15} {'L':>5} {'B':>2} {'pass':<6} {'flex_ms':>9} {'TFLOP/s':>8} "
          f"{'rel_err':>8}")
    for backward in (False, True):
        for length in lengths:
            for rule in MASKS:
                if time.monotonic() - start > args.budget_s:
                    records.append({"mask": rule, "L": length,
                                    "pass": "fwdbwd" if backward else "fwd",
                                    "skipped": f"over the {args.budget_s:.0f} s budget"})
                    continue
                record = {"mask": rule, "L": length, "B": batch_for(length), "H": HEADS,
                          "D": DIM, "pass": "fwdbwd" if backward else "fwd"}
                try:
                    lo, hi = intervals(rule, length, torch, device)
                    lo_buf.zero_()
                    hi_buf.zero_()
                    lo_buf[:length] = lo
                    hi_buf[:length] = hi
                    block_mask = create_block_mask(mask_mod, None, None, length, length,
                                                   device=device)
                    keys = torch.arange(length, device=device)
                    dense = (lo[:, None] <= keys[None, :]) & (keys[None, :] < hi[:, None])
                    visible = int(dense.sum().item())
                    gen = torch.Generator(device=device).manual_seed(1234)
                    shape = (batch_for(length), HEADS, length, DIM)
                    q, k, v, grad = (torch.randn(shape, device=device, dtype=torch.bfloat16,
                                                 generator=gen) for _ in range(4))
                    for t in (q, k, v):
                        t.requires_grad_(backward)
                    want = torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                            attn_mask=dense)
                    got = flex(q, k, v, block_mask=block_mask)
                    err = ((got.float() - want.float()).norm() / want.float().norm()).item()
                    if backward:
                        def run():
                            flex(q, k, v, block_mask=block_mask).backward(grad)
                        ms = triton.testing.do_bench(run, warmup=25, rep=100,
                                                     grad_to_none=[q, k, v],
                                                     return_mode="median")
                    else:
                        def run():
                            with torch.no_grad():
                                flex(q, k, v, block_mask=block_mask)
                        ms = triton.testing.do_bench(run, warmup=25, rep=100,
                                                     return_mode="median")
                    flops = 4.0 * visible * DIM * batch_for(length) * HEADS
                    if backward:
                        flops *= FWD_BWD_FLOP_FACTOR
                    record.update({"ms_flex": ms, "flex_tflops": flops / (ms * 1e-3) / 1e12,
                                   "visible_pairs": visible, "rel_error_vs_sdpa_mask": err})
                    print(f"{rule:<15} {length:>5} {record['B']:>2} {record['pass']:<6} "
                          f"{ms:>9.3f} {record['flex_tflops']:>8.1f} {err:>8.1e}", flush=True)
                except Exception as e:  # noqa: BLE001 - one failing configuration is reported
                    record["error"] = repr(e)
                    print(f"{rule:<15} {length:>5} error: {e!r}", flush=True)
                records.append(record)
                write()
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
