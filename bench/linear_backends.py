#!/usr/bin/env python3
"""The two float32 CPU GEMMs a linear layer can run on, timed on the shapes of VAR-d16's sampling.

tessera::linear (include/tessera/nn/linear.h) chooses between at::linear (MKL's sgemm for float32
on the CPU) and LibTorch's mkldnn::_linear_pointwise (oneDNN's inner product) by a fixed rule
(Note [Linear layers through oneDNN] in src/nn/linear.cpp). This script measures the same two
LibTorch kernels through torch, so the rule's numbers can be checked on any machine:

    ~/.cache/tessera/venv-torch-2.11.0/bin/python bench/linear_backends.py --threads 2

For each weight shape of a VAR-d16 block (qkv 1024->3072, MLP 1024->4096 and 4096->1024, AdaLN
1024->6144) and each row count (a scale's tokens times the doubled guidance batch), it prints the
median GFLOP/s of both, float32 and bfloat16, and their ratio.
"""

import argparse
import statistics
import time

import torch


def median_seconds(fn, runs):
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    onednn = torch.ops.mkldnn._linear_pointwise
    print(f"threads {args.threads}, torch {torch.__version__}, median of {args.runs} runs")
    print(f"{'in':>5} {'out':>5} {'rows':>5} | {'fp32 MKL':>9} {'oneDNN':>7} {'ratio':>6} | "
          f"{'bf16 at::linear':>15} {'oneDNN':>7}   GFLOP/s")
    for in_features, out_features in ((1024, 3072), (1024, 4096), (4096, 1024), (1024, 6144)):
        torch.manual_seed(0)
        weight = torch.randn(out_features, in_features) * 0.02
        bias = torch.randn(out_features)
        weight_bf16, bias_bf16 = weight.bfloat16(), bias.bfloat16()
        for rows in (2, 4, 8, 16, 32, 64, 128, 256, 512, 2048):
            x = torch.randn(rows, in_features)
            x_bf16 = x.bfloat16()
            flops = 2 * rows * in_features * out_features / 1e9
            with torch.inference_mode():
                mkl = median_seconds(lambda: torch.nn.functional.linear(x, weight, bias), args.runs)
                dnn = median_seconds(lambda: onednn(x, weight, bias, "none", [], ""), args.runs)
                bf16 = median_seconds(
                    lambda: torch.nn.functional.linear(x_bf16, weight_bf16, bias_bf16), args.runs)
                bf16_dnn = median_seconds(
                    lambda: onednn(x_bf16, weight_bf16, bias_bf16, "none", [], ""), args.runs)
            print(f"{in_features:>5} {out_features:>5} {rows:>5} | {flops / mkl:>9.0f} "
                  f"{flops / dnn:>7.0f} {mkl / dnn:>5.2f}x | {flops / bf16:>15.0f} "
                  f"{flops / bf16_dnn:>7.0f}")


if __name__ == "__main__":
    main()
