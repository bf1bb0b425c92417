#!/usr/bin/env python3
"""The CPU GEMMs a linear layer can run on, timed on the shapes of VAR-d16's or LlamaGen-B's sampling.

tessera::linear (include/tessera/nn/linear.h) chooses between at::linear (MKL's sgemm for float32
on the CPU) and LibTorch's mkldnn::_linear_pointwise (oneDNN's inner product) by a fixed rule
(Note [Linear layers through oneDNN] in src/nn/linear.cpp). This script measures the same two
LibTorch kernels through torch, so the rule's numbers can be checked on any machine:

    ~/.cache/tessera/venv-torch-2.11.0/bin/python bench/linear_backends.py --threads 2

For each weight shape of a VAR-d16 block (qkv 1024->3072, MLP 1024->4096 and 4096->1024, AdaLN
1024->6144), or with --model llamagen-b of a GPT-B block and its head (qkv 768->2304, SwiGLU
768->2048 and 2048->768, vocabulary 768->16384; the 768x768 projection is below the rule's size
and stays on MKL), and each row count (a scale's tokens, or one token per sample, times the
doubled guidance batch), it prints the
median GFLOP/s of both, float32 and bfloat16, and their ratio; and of Tessera's int8 layer
(tessera/nn/int8_linear.h: per-channel int8 weights, each row scaled to [-1, 1] and quantized by
FBGEMM's fixed-scale product, the row's scale and the bias applied after), with its ratio to the
faster float32 GEMM.
"""

import argparse
import statistics
import time

import torch


# (in, out) of the layers each model's sampling runs through tessera::linear, and its row counts.
SHAPES = {"var-d16": ((1024, 3072), (1024, 4096), (4096, 1024), (1024, 6144)),
          "llamagen-b": ((768, 2304), (768, 2048), (2048, 768), (768, 16384))}
ROWS = {"var-d16": (2, 4, 8, 16, 32, 64, 128, 256, 512, 2048),
        "llamagen-b": (2, 4, 8, 16, 32, 64)}


def median_seconds(fn, runs):
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f
                             if line.startswith("flags")), []))
    except OSError:
        return set()


def cpu_has_vnni():
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni"})


def int8_layer(weight, bias):
    """Tessera's int8 linear layer (Note [int8 linear layers]) from LibTorch's operators."""
    out_features = weight.shape[0]
    scales = (weight.abs().amax(1) / 127).double()
    scales[scales == 0] = 1.0
    quantized = torch.quantize_per_channel(weight, scales, torch.zeros(out_features,
                                                                        dtype=torch.long),
                                           0, torch.qint8)
    torch.backends.quantized.engine = "fbgemm"
    packed = torch.ops.quantized.linear_prepack(quantized, None)
    levels = 127 if cpu_has_vnni() else 63
    product = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32

    def forward(x):
        peak = x.abs().amax(1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny)
        return torch.addcmul(bias, product(x / peak, 1.0 / levels, levels + 1, packed), peak)

    return forward


def rate(flops, seconds):
    return "-" if seconds is None else f"{flops / seconds:.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", choices=sorted(SHAPES), default="var-d16",
                        help="whose layer shapes to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    onednn = torch.ops.mkldnn._linear_pointwise
    # Without bf16 hardware LibTorch emulates bf16 products and oneDNN has no bf16 inner
    # product at all: those columns are left out ("-").
    bf16_hardware = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    print(f"threads {args.threads}, torch {torch.__version__}, median of {args.runs} runs, "
          f"bf16 hardware: {'yes' if bf16_hardware else 'no'}, "
          f"int8 input levels {127 if cpu_has_vnni() else 63}")
    print(f"{'in':>5} {'out':>5} {'rows':>5} | {'fp32 MKL':>9} {'oneDNN':>7} {'ratio':>6} | "
          f"{'bf16 at::linear':>15} {'oneDNN':>7} | {'int8':>6} {'vs fp32':>7}   GFLOP/s")
    for in_features, out_features in SHAPES[args.model]:
        torch.manual_seed(0)
        weight = torch.randn(out_features, in_features) * 0.02
        bias = torch.randn(out_features)
        weight_bf16, bias_bf16 = weight.bfloat16(), bias.bfloat16()
        int8 = int8_layer(weight, bias)
        for rows in ROWS[args.model]:
            x = torch.randn(rows, in_features)
            x_bf16 = x.bfloat16()
            flops = 2 * rows * in_features * out_features / 1e9
            with torch.inference_mode():
                mkl = median_seconds(lambda: torch.nn.functional.linear(x, weight, bias), args.runs)
                dnn = median_seconds(lambda: onednn(x, weight, bias, "none", [], ""), args.runs)
                bf16 = bf16_dnn = None
                if bf16_hardware:
                    bf16 = median_seconds(
                        lambda: torch.nn.functional.linear(x_bf16, weight_bf16, bias_bf16),
                        args.runs)
                    bf16_dnn = median_seconds(
                        lambda: onednn(x_bf16, weight_bf16, bias_bf16, "none", [], ""),
                        args.runs)
                quantized = median_seconds(lambda: int8(x), args.runs)
            print(f"{in_features:>5} {out_features:>5} {rows:>5} | {flops / mkl:>9.0f} "
                  f"{flops / dnn:>7.0f} {mkl / dnn:>5.2f}x | {rate(flops, bf16):>15} "
                  f"{rate(flops, bf16_dnn):>7} | {flops / quantized:>6.0f} "
                  f"{min(mkl, dnn) / quantized:>6.2f}x")
    print_int8_accuracy()


def print_int8_accuracy():
    """Relative error against float64 of the int8 layer (one scale per input row) and of PyTorch's
    dynamic quantization (one scale per batch), on rows whose magnitudes differ, as activations
    of different samples and positions do."""
    torch.manual_seed(0)
    x = torch.randn(64, 1024) * torch.rand(64, 1) * 10
    weight, bias = torch.randn(4096, 1024) * 0.02, torch.zeros(4096)
    exact = x.double() @ weight.double().t()
    scales = (weight.abs().amax(1) / 127).double()
    packed = torch.ops.quantized.linear_prepack(
        torch.quantize_per_channel(weight, scales, torch.zeros(4096, dtype=torch.long), 0,
                                   torch.qint8), None)
    reduce_range = not cpu_has_vnni()  # what LibTorch's dynamic quantization uses on x86
    per_batch = torch.ops.quantized.linear_dynamic(x, packed, reduce_range)

    def relative(y):
        return ((y.double() - exact).norm() / exact.norm()).item()

    print(f"int8 relative error on [64 x 1024] rows of mixed magnitude times [1024 x 4096]: "
          f"per-row scales (Tessera) {relative(int8_layer(weight, bias)(x)):.4f}, one scale per "
          f"batch (torch dynamic quantization) {relative(per_batch):.4f}")


if __name__ == "__main__":
    main()
