#!/usr/bin/env python3
"""The quality check: every shipped generator, sampled with fixed seeds, must score what its
recorded figures say.

    check_quality.py SOURCE_DIR TESSERA [--recorded FILE]

Runs `tessera demo --samples N` (N and the seed read from the recorded file,
docs/results/quality-check.json by default) into a temporary folder and compares its results file
with the recorded one, model by model (docs/evaluation.md, "The quality check", derives the bands):

  * accuracy: |a − a₀| ≤ z·√(2·a₀(1 − a₀)/N)     (two independent binomial proportions)
  * FID-FM:   |f − f₀| ≤ z·√(s₀² + s²)            (s: FID-FM's bootstrap standard error at N)
  * z = 3.5: with 7 models × 2 figures, a fresh, unchanged-in-distribution draw passes all 14 with
    probability ≥ 99.3 %.
  * on the CPU the figures were recorded on (name, family/model/stepping, kernel flags), the
    samples themselves: their digest must be equal, since sampling is bit-reproducible there
    (docs/determinism.md). A change that alters any sample fails here, however small; re-record
    with scripts/update-results --record-quality once the change is intended and its figures are
    within the bands.

The set of models must equal the recorded set. Exit status: 0 pass, 1 fail, 77 skipped for a
missing prerequisite (the Fashion-MNIST data set) — a failure under TESSERA_REQUIRE_ALL.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

Z = 3.5


def require_all():
    return os.environ.get("TESSERA_REQUIRE_ALL", "") not in ("", "0")


def accuracy_band(recorded, samples):
    return Z * math.sqrt(2.0 * recorded * (1.0 - recorded) / samples)


def fid_band(recorded_se, measured_se):
    return Z * math.hypot(recorded_se, measured_se)


def same_cpu(a, b):
    return all(a.get(key) == b.get(key) for key in ("cpu", "cpu_model", "cpu_flags"))


def compare(recorded, measured, compare_digests=None):
    """Failures (strings) of `measured` against `recorded`, and lines to print. The samples'
    digests are compared when `compare_digests` says so; by default when both ran on the same
    CPU."""
    failures, lines = [], []
    rec = {row["model"]: row for row in recorded["models"]}
    now = {row["model"]: row for row in measured["models"]}
    for name in sorted(set(rec) - set(now)):
        failures.append(f"{name}: recorded but not shipped any more (models/{name}.safetensors)")
    for name in sorted(set(now) - set(rec)):
        failures.append(f"{name}: shipped but has no recorded figures (record them: "
                        "scripts/update-results --record-quality)")
    exact = (same_cpu(recorded["machine"], measured["machine"]) if compare_digests is None
             else compare_digests)
    lines.append(f"{'model':<28} {'accuracy':>8} {'recorded':>8} {'band':>7}   "
                 f"{'FID-FM':>7} {'recorded':>8} {'band':>6}   samples")
    for name in sorted(set(rec) & set(now)):
        r, m = rec[name], now[name]
        if r["samples"] != m["samples"] or r["seed"] != m["seed"]:
            failures.append(f"{name}: measured {m['samples']} samples (seed {m['seed']}), "
                            f"recorded {r['samples']} (seed {r['seed']})")
            continue
        verdicts = []
        acc_line = f"{'-':>8} {'-':>8} {'-':>7}"
        if r["accuracy"] is not None:
            band = accuracy_band(r["accuracy"], r["samples"])
            acc_line = f"{100 * m['accuracy']:7.2f}% {100 * r['accuracy']:7.2f}% ±{100 * band:5.2f}"
            if m["accuracy"] is None or abs(m["accuracy"] - r["accuracy"]) > band:
                verdicts.append(f"accuracy {100 * m['accuracy']:.2f} % is outside "
                                f"{100 * r['accuracy']:.2f} ± {100 * band:.2f} %")
        band = fid_band(r["fid_fm_standard_error"], m["fid_fm_standard_error"])
        if abs(m["fid_fm"] - r["fid_fm"]) > band:
            verdicts.append(f"FID-FM {m['fid_fm']:.3f} is outside {r['fid_fm']:.3f} ± {band:.3f}")
        same = m["samples_digest"] == r["samples_digest"]
        if exact and not same:
            verdicts.append(f"the samples changed on the CPU they were recorded on (digest "
                            f"{m['samples_digest']}, recorded {r['samples_digest']}): a change "
                            "altered sampling; if intended, re-record with scripts/update-results "
                            "--record-quality")
        digest = ("identical" if same else "differ") if exact else "not compared"
        lines.append(f"{name:<28} {acc_line}   {m['fid_fm']:7.3f} {r['fid_fm']:8.3f} ±{band:5.3f}"
                     f"   {digest}")
        failures += [f"{name}: {v}" for v in verdicts]
    if not exact and compare_digests is None:
        lines.append(f"samples not compared bit for bit: recorded on {recorded['machine']['cpu']} "
                     f"[{recorded['machine']['cpu_flags']}], this is {measured['machine']['cpu']} "
                     f"[{measured['machine']['cpu_flags']}] (only the bands apply)")
    return failures, lines


def run_demo(source, tessera, samples, out):
    """`tessera demo --samples N` from `source` (models/ and the classifier there), its grids into
    `out`; returns its results file, parsed."""
    results = os.path.join(out, "quality.json")
    command = [tessera, "demo", "--samples", str(samples), "--out", out, "--json", results]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, cwd=source, check=True)
    with open(results) as f:
        return json.load(f)


def main():
    args = sys.argv[1:]
    if len(args) not in (2, 4) or (len(args) == 4 and args[2] != "--recorded"):
        sys.exit(__doc__)
    source, tessera = args[0], args[1]
    recorded_path = args[3] if len(args) == 4 else os.path.join(
        source, "docs", "results", "quality-check.json")
    data = os.environ.get("TESSERA_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
    if not os.path.exists(os.path.join(data, "train-images-idx3-ubyte.gz")):
        what = f"Fashion-MNIST at {data} (set TESSERA_FASHION_MNIST_DIR)"
        if require_all():
            print(f"FAILED: missing prerequisite: {what} (TESSERA_REQUIRE_ALL is set)")
            return 1
        print(f"SKIPPED: missing prerequisite: {what}")
        return 77
    with open(recorded_path) as f:
        recorded = json.load(f)
    with tempfile.TemporaryDirectory(prefix="tessera-quality-") as out:
        measured = run_demo(source, tessera, recorded["samples"], out)
    if measured["seed"] != recorded["seed"]:
        print(f"FAILED: the demo sampled with seed {measured['seed']}, recorded "
              f"{recorded['seed']}")
        return 1
    failures, lines = compare(recorded, measured)
    print(f"\nquality check against {recorded_path} (recorded {recorded['date']} with "
          f"`{recorded['command']}`), z = {Z}:")
    print("\n".join(lines))
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nquality check: every shipped generator within its bands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
