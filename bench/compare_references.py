#!/usr/bin/env python3
"""Measure Tessera's VAR, HMAR, LlamaGen and MAR samplers against the reference Python samplers, at once.

What it measures: for each family (VAR and HMAR at depth 16; LlamaGen GPT-B c2i with the
VQ-16 tokenizer at 256 px; MAR-B with KL-16 at 256 px; random weights, the references' published sampling settings) and
each batch size, the wall-clock seconds of one sampling call from class labels to decoded
256x256 images, on the CPU, on both sides:

  * the reference: bench/reference_sample.py, which imports the reference's own model code
    from a git clone and times its own entry point (VAR.autoregressive_infer_cfg /
    HMAR.generate / LlamaGen's generate() followed by VQModel.decode_code, as its
    sample_c2i.py runs them / MAR.sample_tokens followed by the VAE's decode, as main_mar.py
    runs them), in fp32, under torch.autocast(bfloat16) ("autocast-bf16") and with its
    transformer's linear layers in PyTorch's dynamic int8 ("dynamic-int8"); LlamaGen and MAR
    in fp32 only;
  * Tessera: build/bench/sample_bench with the var-d16 / hmar-d16 / llamagen-b / mar-b
    presets, in fp32, bf16 and int8 (LlamaGen, MAR: fp32 only, like their reference side). Its labels are
    0, 1, 2, ... (sample_bench's); the LlamaGen reference uses sample_c2i.py's class list
    cycled to the batch (the labels do not change the cost of a call).

From the medians it derives, per (family, batch):

  * fp32 speed ratio  = Tessera fp32 images/s / reference fp32 images/s
    (goal >= 1.10 for VAR and HMAR, >= 1.50 for LlamaGen and MAR: FP32_SPEED_GOALS)
  * fp32 memory ratio = Tessera fp32 peak RSS / reference fp32 peak RSS    (goal <= 1.00)
  * bf16 (VAR, HMAR): Tessera bf16 / reference fp32 (goal >= 2.5, only judged on a CPU with
    avx512_bf16 or amx_bf16) and Tessera bf16 / reference autocast-bf16 (goal >= 1.5), for
    speed and for memory alike;
  * int8: Tessera int8 / reference fp32 and Tessera int8 / reference dynamic-int8, speed and
    memory (reported; the issue sets no goal for int8);
  * the phase split (backbone / head or sampling / decode / rest) of both sides, side by side;
  * inside Tessera, HMAR vs VAR in fp32: images/s ratio and peak-memory ratio per batch.

The one-run protocol: every measurement is a separate process (so that each peak RSS belongs
to one configuration, and neither side inherits the other's caches or allocator state), run
one after the other on the same machine, each doing its own warm-up and timed repeats. For
each (family, batch) the order is reference fp32, Tessera fp32, then reference autocast-bf16,
Tessera bf16, then reference dynamic-int8, Tessera int8 (those the family supports), and
which side goes first alternates from one (family, batch) pair to the next, so that slow
spells of a shared machine (another build, thermal or frequency changes) fall on both sides
alike rather than on one. All processes get the same thread count and see no GPU.

The reference code is never committed to this repository: it is imported at run time from
clones in a scratch folder outside the repository, at the commits that the output JSON
records (see bench/reference_sample.py for how to clone them). A copy that is not a git clone
records the commit given with --<family>-commit (or its COMMIT file).

Examples:

    ~/.cache/tessera/venv-torch-2.11.0/bin/python bench/compare_references.py \\
        --var-repo /work/scratch/refs/VAR --hmar-repo /work/scratch/refs/HMAR
    ~/.cache/tessera/venv-torch-2.11.0/bin/python bench/compare_references.py \\
        --llamagen-repo /work/scratch/refs/LlamaGen \\
        --llamagen-commit ce98ec41803a74a90ce68c40ababa9eaeffeb4ec \\
        --batches 1,8 --precisions fp32 --json-name compat_speed.json
    PYTHONPATH=/work/scratch/pylibs ~/.cache/tessera/venv-torch-2.11.0/bin/python \\
        bench/compare_references.py --mar-repo /work/scratch/refs/mar \\
        --mar-commit fe470ac24afbee924668d8c5c83e9fec60af3a73 \\
        --batches 1,8 --precisions fp32 --json-name compat_speed_mar.json
    (MAR's model code needs timm, scipy and tqdm: see bench/reference_sample.py.)

Outputs, in --out (default build/bench): the JSON named by --json-name (default
sample_vs_reference.json: machine, versions, reference commits and settings, every raw result
of both sides and the ratios), written only when every process succeeded, and a log with the
full stdout/stderr of every process (compare_references.log, or <name>.log for a
--json-name <name>.json). The tables and goal checks are printed as Markdown.
"""

import argparse
import datetime
import json
import os
import operator
import shlex
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
REFERENCE_SCRIPT = os.path.join(BENCH_DIR, "reference_sample.py")

# Both sides run the same models: Tessera's presets var-d16 / hmar-d16 / llamagen-b, and the
# reference script is told the same depth (VAR, HMAR) or GPT size (LlamaGen) explicitly rather
# than relying on its default.
DEPTH = 16
LLAMAGEN_SIZE = "b"
MAR_SIZE = "b"
FAMILIES = ("var", "hmar", "llamagen", "mar")
FAMILY_NAMES = {"var": "VAR", "hmar": "HMAR", "llamagen": "LlamaGen", "mar": "MAR"}
TESSERA_MODELS = {"var": f"var-d{DEPTH}", "hmar": f"hmar-d{DEPTH}",
                  "llamagen": f"llamagen-{LLAMAGEN_SIZE}", "mar": f"mar-{MAR_SIZE}"}
REFERENCE_MODEL_ARGS = {"var": ["--depth", str(DEPTH)], "hmar": ["--depth", str(DEPTH)],
                        "llamagen": ["--size", LLAMAGEN_SIZE], "mar": ["--size", MAR_SIZE]}
PRECISIONS = ("fp32", "bf16", "int8")
# The precisions each family's reference side supports (reference_sample.py refuses
# --autocast-bf16 / --dynamic-int8 for LlamaGen); the others are skipped for that family.
FAMILY_PRECISIONS = {"var": PRECISIONS, "hmar": PRECISIONS, "llamagen": ("fp32",),
                     "mar": ("fp32",)}

DEFAULT_JSON_NAME = "sample_vs_reference.json"

# Goals (see the docstring). Speed ratios are Tessera / reference images/s, memory ratios
# Tessera / reference peak RSS. The fp32 speed goal is per family (LlamaGen, MAR: issue 28).
FP32_SPEED_GOALS = {"var": 1.10, "hmar": 1.10, "llamagen": 1.50, "mar": 1.50}
GOAL_FP32_MEMORY = 1.00
GOAL_BF16_VS_REF_FP32 = 2.5
GOAL_BF16_VS_REF_BF16 = 1.5
# A CPU without native bf16 arithmetic emulates it, so the bf16-vs-fp32 goal only means
# something where one of these flags is present.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

# sample_bench's labels (labels_for in bench/sample_bench.cpp).
TESSERA_LABELS = "torch.arange(batch) % num_classes (sample_bench)"

GB = 1e9  # peak RSS is shown in GB (10^9 bytes), the raw bytes are in the JSON


class RunFailed(Exception):
    """A measurement process failed or produced no usable result."""


# --------------------------------------------------------------------------- arguments

def parse_list(text, convert, what):
    items = [convert(part.strip()) for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"empty list of {what}")
    return items


def positive_ints(text):
    try:
        values = parse_list(text, int, "batch sizes")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1: {text!r}")
    # Keep the order given but drop repeats: each batch size is measured once per side.
    return list(dict.fromkeys(values))


def precisions(text):
    values = parse_list(text, str.lower, "precisions")
    unknown = [v for v in values if v not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision(s) {unknown}; choose from "
                                         f"{', '.join(PRECISIONS)}")
    # Measured in the fixed order fp32, bf16, int8, whatever order they were given in.
    return [p for p in PRECISIONS if p in values]


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--sample-bench", default=os.path.join(REPO_ROOT, "build", "bench",
                                                               "sample_bench"),
                        help="Tessera's benchmark binary (default: build/bench/sample_bench)")
    parser.add_argument("--var-repo", help="clone of the VAR reference (omit to skip VAR)")
    parser.add_argument("--hmar-repo", help="clone of the HMAR reference (omit to skip HMAR)")
    parser.add_argument("--llamagen-repo",
                        help="clone (or exported tree) of the LlamaGen reference (omit to skip "
                             "LlamaGen); measured in fp32 only")
    parser.add_argument("--mar-repo",
                        help="clone (or exported tree) of the MAR reference (omit to skip MAR); "
                             "measured in fp32 only")
    for family in FAMILIES:
        parser.add_argument(f"--{family}-commit", metavar="SHA",
                            help=f"commit of the {FAMILY_NAMES[family]} reference, recorded "
                                 "when its folder is not a git clone (else its COMMIT file)")
    parser.add_argument("--batches", type=positive_ints, default=[1, 4, 16],
                        metavar="N[,N...]", help="batch sizes (default 1,4,16)")
    parser.add_argument("--precisions", type=precisions, default=list(PRECISIONS),
                        metavar="P[,P...]",
                        help="any of fp32, bf16, int8 (default all); Tessera bf16 pairs with "
                             "the reference under --autocast-bf16, int8 with the reference "
                             "under --dynamic-int8")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per process")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per process")
    parser.add_argument("--threads", type=int, default=2, help="compute threads, both sides")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "build", "bench"),
                        help="folder for the log and the JSON (default build/bench)")
    parser.add_argument("--json-name", default=DEFAULT_JSON_NAME, metavar="NAME.json",
                        help=f"file name of the JSON in --out (default {DEFAULT_JSON_NAME}); "
                             "the log is then NAME.log")
    parser.add_argument("--python", default=sys.executable,
                        help="Python that runs the reference (default: this one)")
    args = parser.parse_args()

    if args.warmup < 0 or args.repeat < 1 or args.threads < 1:
        parser.error("--warmup must be >= 0; --repeat and --threads must be >= 1")
    args.repos = {f: getattr(args, f"{f}_repo") for f in FAMILIES if getattr(args, f"{f}_repo")}
    if not args.repos:
        parser.error("nothing to measure: give --var-repo, --hmar-repo, --llamagen-repo and/or "
                     "--mar-repo")
    args.commits = {f: getattr(args, f"{f}_commit") for f in FAMILIES
                    if getattr(args, f"{f}_commit")}
    for family in args.commits:
        if family not in args.repos:
            parser.error(f"--{family}-commit without --{family}-repo")
    for family in args.repos:
        if not [p for p in args.precisions if p in FAMILY_PRECISIONS[family]]:
            parser.error(f"{FAMILY_NAMES[family]} is measured in "
                         f"{', '.join(FAMILY_PRECISIONS[family])} only; --precisions "
                         f"{','.join(args.precisions)} leaves nothing to measure for it")
    if (os.path.basename(args.json_name) != args.json_name
            or not args.json_name.endswith(".json") or args.json_name == ".json"):
        parser.error(f"--json-name {args.json_name!r}: a plain file name ending in .json")
    # Check everything that can be checked before the first (slow) process starts, so that a
    # typo does not surface only after minutes of reference runs.
    for family, repo in args.repos.items():
        if not os.path.isdir(repo):
            parser.error(f"--{family}-repo {repo}: no such directory")
        args.repos[family] = os.path.abspath(repo)
    args.sample_bench = os.path.abspath(args.sample_bench)
    if not (os.path.isfile(args.sample_bench) and os.access(args.sample_bench, os.X_OK)):
        parser.error(f"--sample-bench {args.sample_bench}: not an executable file "
                     f"(build the bench/ targets first)")
    if not os.path.isfile(REFERENCE_SCRIPT):
        parser.error(f"missing {REFERENCE_SCRIPT}")
    args.out = os.path.abspath(args.out)
    return args


# --------------------------------------------------------------------------- the processes

def child_env(threads):
    """The environment of every measured process, identical for both sides.

    The thread count is also given on each command line; the variables additionally stop
    OpenMP/MKL pools from sizing themselves to the machine behind either side's back. Hiding
    GPUs makes both sides run on the CPU (the reference script does so itself as well)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "CUDA_VISIBLE_DEVICES": ""})
    return env


def tessera_model(family):
    return TESSERA_MODELS[family]


def family_precisions(args, family):
    """The asked-for precisions that this family's reference side supports."""
    return [p for p in args.precisions if p in FAMILY_PRECISIONS[family]]


def run_logged(command, log, env):
    """Run command to completion with its stdout and stderr appended to the log."""
    log.write(f"\n===== {datetime.datetime.now().isoformat(timespec='seconds')}  "
              f"$ {shlex.join(command)}\n")
    log.flush()  # our header must land before the child's output in the shared file
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=REPO_ROOT)
    except OSError as err:
        raise RunFailed(f"could not start `{shlex.join(command)}`: {err}")
    wall = time.perf_counter() - start
    log.write(f"===== exit status {proc.returncode} after {wall:.1f} s\n")
    log.flush()
    if proc.returncode != 0:
        raise RunFailed(f"`{shlex.join(command)}` exited with status {proc.returncode}")
    return wall


def load_json(path, command):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise RunFailed(f"`{shlex.join(command)}` succeeded but its JSON {path} could not be "
                        f"read: {err}")


def measure_reference(args, family, precision, batch, tmp, log, env):
    """One reference process; returns (its JSON minus results, its single result, command, s)."""
    json_path = os.path.join(tmp, f"reference_{family}_b{batch}_{precision}.json")
    command = [args.python, REFERENCE_SCRIPT, "--family", family, "--repo", args.repos[family],
               *REFERENCE_MODEL_ARGS[family], "--batch", str(batch), "--warmup", str(args.warmup),
               "--repeat", str(args.repeat), "--threads", str(args.threads),
               # --profile: the phase split for the side-by-side table. Its timers wrap a few
               # hundred Python calls per image, microseconds against seconds per call.
               "--profile", "--json", json_path]
    if family in args.commits:
        command += ["--commit", args.commits[family]]
    if precision == "bf16":
        command.append("--autocast-bf16")
    elif precision == "int8":
        command.append("--dynamic-int8")
    wall = run_logged(command, log, env)
    report = load_json(json_path, command)
    results = [r for r in report.get("results", []) if r.get("batch") == batch]
    if len(results) != 1:
        raise RunFailed(f"`{shlex.join(command)}` wrote no result for batch {batch}")
    meta = {k: v for k, v in report.items() if k != "results"}
    return meta, results[0], command, wall


def measure_tessera(args, family, precision, batch, tmp, log, env):
    """One sample_bench process; returns (its JSON minus results, its single result, command, s)."""
    out_dir = os.path.join(tmp, f"tessera_{family}_b{batch}_{precision}")
    os.makedirs(out_dir)
    command = [args.sample_bench, "--models", tessera_model(family), "--batches", str(batch),
               "--precisions", precision, "--warmup", str(args.warmup), "--repeat",
               str(args.repeat), "--threads", str(args.threads), "--out", out_dir]
    wall = run_logged(command, log, env)
    report = load_json(os.path.join(out_dir, "sample.json"), command)
    results = [r for r in report.get("results", [])
               if (r.get("model"), r.get("precision"), r.get("batch"))
               == (tessera_model(family), precision, batch)]
    if len(results) != 1:
        raise RunFailed(f"`{shlex.join(command)}` wrote no result for "
                        f"{tessera_model(family)} {precision} batch {batch}")
    meta = {k: v for k, v in report.items() if k != "results"}
    return meta, results[0], command, wall


def side_label(side, precision):
    if side == "reference":
        return "reference " + {"fp32": "fp32", "bf16": "autocast-bf16",
                               "int8": "dynamic-int8"}[precision]
    return f"Tessera {precision}"


def plan(args):
    """The ordered list of (family, batch, side, precision) processes (see the docstring)."""
    steps = []
    pair = 0  # counts (family, batch) pairs, so the alternation runs on across families too
    for family in FAMILIES:
        if family not in args.repos:
            continue
        for batch in args.batches:
            sides = ("reference", "tessera") if pair % 2 == 0 else ("tessera", "reference")
            for precision in family_precisions(args, family):
                for side in sides:
                    steps.append((family, batch, side, precision))
            pair += 1
    return steps


def measure_all(args, log):
    env = child_env(args.threads)
    steps = plan(args)
    runs, reference_meta, tessera_meta = [], {}, None
    width = len(str(len(steps)))
    with tempfile.TemporaryDirectory(prefix="compare_references.") as tmp:
        for index, (family, batch, side, precision) in enumerate(steps, 1):
            label = side_label(side, precision)
            # One progress line per process: what runs now, then its result when it ends.
            print(f"[{index:>{width}}/{len(steps)}] {FAMILY_NAMES[family]:<8} batch {batch:>3}  "
                  f"{label:<23}",
                  end=" ", flush=True)
            measure = measure_reference if side == "reference" else measure_tessera
            try:
                meta, result, command, wall = measure(args, family, precision, batch, tmp,
                                                      log, env)
            except RunFailed:
                print("FAILED", flush=True)
                raise
            print(f"{result['median_s']:8.3f} s/call  {result['images_per_s']:7.3f} img/s  "
                  f"peak {result['peak_rss_bytes'] / GB:6.2f} GB  ({wall:.0f} s)", flush=True)
            if side == "reference":
                # Commit, settings and notes are per family; keep the first run's (an
                # autocast run differs only in autocast_bf16 and, for HMAR, one extra note,
                # so the notes are kept per precision).
                reference_meta.setdefault(family, meta)
                reference_meta[family].setdefault("notes_by_precision", {})[precision] = \
                    meta.get("notes")
            elif tessera_meta is None:
                tessera_meta = meta
            # "label" spells out that the reference's bf16 run is fp32 code under autocast.
            runs.append({"order": index, "family": family, "batch": batch, "side": side,
                         "precision": precision, "label": label, "command": command,
                         "process_wall_s": wall, "result": result})
    return runs, reference_meta, tessera_meta


# --------------------------------------------------------------------------- ratios

def ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def find(runs, family, batch, side, precision):
    for run in runs:
        if (run["family"], run["batch"], run["side"], run["precision"]) == \
                (family, batch, side, precision):
            return run["result"]
    return None


def phase_split(result, side):
    """Seconds per phase with common keys: the reference's "sampling" is the token draw that
    Tessera's "head" also covers (see the note printed with the table)."""
    phases = result.get("phases_s") if result else None
    if not phases:
        return None
    draw = phases.get("head" if side == "tessera" else "sampling")
    split = {"backbone": phases.get("backbone"), "head_or_sampling": draw,
             "decode": phases.get("decode"), "rest": phases.get("rest")}
    known = [v for v in split.values() if v is not None]
    split["total"] = phases.get("total", sum(known) if known else None)
    return split


def compute_ratios(runs, families, batches):
    rows = []
    for family in families:
        for batch in batches:
            ref32 = find(runs, family, batch, "reference", "fp32")
            ref16 = find(runs, family, batch, "reference", "bf16")
            tes32 = find(runs, family, batch, "tessera", "fp32")
            tes16 = find(runs, family, batch, "tessera", "bf16")
            ref8 = find(runs, family, batch, "reference", "int8")
            tes8 = find(runs, family, batch, "tessera", "int8")

            def speed(t, r):
                return ratio(t and t["images_per_s"], r and r["images_per_s"])

            def memory(t, r):
                return ratio(t and t["peak_rss_bytes"], r and r["peak_rss_bytes"])

            row = {"family": family, "batch": batch}
            if ref32 and tes32:
                row["fp32"] = {"speed": speed(tes32, ref32), "memory": memory(tes32, ref32)}
            for precision, key, tes, ref in (("bf16", "autocast_bf16", tes16, ref16),
                                             ("int8", "dynamic_int8", tes8, ref8)):
                if tes:
                    row[precision] = {
                        "speed_vs_reference_fp32": speed(tes, ref32),
                        f"speed_vs_reference_{key}": speed(tes, ref),
                        "memory_vs_reference_fp32": memory(tes, ref32),
                        f"memory_vs_reference_{key}": memory(tes, ref),
                    }
            row["phases_s"] = {f"{side}_{precision}": phase_split(result, side)
                               for side, precision, result in (
                                   ("reference", "fp32", ref32), ("tessera", "fp32", tes32),
                                   ("reference", "autocast_bf16", ref16),
                                   ("tessera", "bf16", tes16),
                                   ("reference", "dynamic_int8", ref8),
                                   ("tessera", "int8", tes8))
                               if result is not None}
            rows.append(row)
    return rows


def tessera_hmar_vs_var(runs, batches):
    rows = []
    for batch in batches:
        var = find(runs, "var", batch, "tessera", "fp32")
        hmar = find(runs, "hmar", batch, "tessera", "fp32")
        if var and hmar:
            rows.append({"batch": batch,
                         "images_per_s_ratio": ratio(hmar["images_per_s"], var["images_per_s"]),
                         "peak_rss_ratio": ratio(hmar["peak_rss_bytes"],
                                                 var["peak_rss_bytes"])})
    return rows


def cpu_flags(tessera_meta, reference_meta):
    """The CPU's flags, from Tessera's machine description (a space-separated string), else
    from the reference's (a list of the flags it looks for)."""
    machine = (tessera_meta or {}).get("machine") or {}
    flags = machine.get("cpu_flags")
    if isinstance(flags, str):
        return set(flags.split())
    if isinstance(flags, list):
        return set(flags)
    for meta in reference_meta.values():
        return set((meta.get("cpu") or {}).get("flags") or [])
    return set()


def goal_checks(rows, families, bf16_hardware):
    """One check per family and goal; a goal passes only if it holds at every batch size."""
    checks = []

    def check(family, name, key, value_of, op, threshold, skip=None):
        if skip:
            checks.append({"family": family, "goal": name, "status": "n/a", "reason": skip,
                           "threshold": threshold, "values": {}})
            return
        values = {row["batch"]: value_of(row) for row in rows
                  if row["family"] == family and key in row}
        if not values or any(v is None for v in values.values()):
            # No row has the precision at all (not in --precisions), or a side of the pair
            # is missing (bf16 asked for without fp32, so there is no reference fp32 run).
            reason = (f"{key} not measured" if not values
                      else "the reference run it compares with was not measured")
            checks.append({"family": family, "goal": name, "status": "n/a", "reason": reason,
                           "threshold": threshold, "values": values})
            return
        ok = all(op(v, threshold) for v in values.values())
        checks.append({"family": family, "goal": name, "status": "PASS" if ok else "MISS",
                       "threshold": threshold, "values": values,
                       "missed_at": [b for b, v in values.items() if not op(v, threshold)]})

    for family in families:
        speed_goal = FP32_SPEED_GOALS[family]
        check(family, f"fp32 speed ratio >= {speed_goal:.2f}", "fp32",
              lambda r: r["fp32"]["speed"], operator.ge, speed_goal)
        check(family, f"fp32 memory ratio <= {GOAL_FP32_MEMORY:.2f}", "fp32",
              lambda r: r["fp32"]["memory"], operator.le, GOAL_FP32_MEMORY)
        if "bf16" not in FAMILY_PRECISIONS[family]:
            continue  # no bf16 on the reference side (LlamaGen), so no bf16 goals
        check(family, f"bf16 speed vs reference fp32 >= {GOAL_BF16_VS_REF_FP32:.1f}", "bf16",
              lambda r: r["bf16"]["speed_vs_reference_fp32"], operator.ge, GOAL_BF16_VS_REF_FP32,
              skip=None if bf16_hardware else "no bf16 hardware")
        check(family, f"bf16 speed vs reference autocast-bf16 >= {GOAL_BF16_VS_REF_BF16:.1f}",
              "bf16", lambda r: r["bf16"]["speed_vs_reference_autocast_bf16"], operator.ge,
              GOAL_BF16_VS_REF_BF16)
    return checks


# --------------------------------------------------------------------------- printing

def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def seconds_of(result):
    return result["median_s"] if result else None


def gb_of(result):
    return result["peak_rss_bytes"] / GB if result else None


# Row labels of the phase table, by the keys of a ratios row's "phases_s".
PHASE_ROW_LABELS = {"reference_fp32": "reference fp32", "tessera_fp32": "Tessera fp32",
                    "reference_autocast_bf16": "reference autocast-bf16",
                    "tessera_bf16": "Tessera bf16",
                    "reference_dynamic_int8": "reference dynamic-int8",
                    "tessera_int8": "Tessera int8"}


def print_lower_precision_table(runs, rows, precision, reference, key):
    """Tessera in `precision` against the reference's fp32 and the reference in `reference`
    (its ratios under `speed_vs_reference_<key>` / `memory_vs_reference_<key>`)."""
    print(f"\n### {precision}: Tessera {precision} vs reference fp32 and reference {reference}\n")
    print(f"| family | batch | ref fp32 s/call | ref {reference} s/call "
          f"| Tessera {precision} s/call | speed vs ref fp32 | speed vs ref {precision} "
          f"| peak RSS ref fp32 / ref {precision} / Tessera {precision} (GB) | memory vs ref fp32 "
          f"| memory vs ref {precision} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if precision not in FAMILY_PRECISIONS[row["family"]]:
            continue  # not measured for this family (LlamaGen: fp32 only)
        ref32 = find(runs, row["family"], row["batch"], "reference", "fp32")
        ref_low = find(runs, row["family"], row["batch"], "reference", precision)
        tes_low = find(runs, row["family"], row["batch"], "tessera", precision)
        r = row.get(precision, {})
        print(f"| {FAMILY_NAMES[row['family']]} | {row['batch']} "
              f"| {fmt(seconds_of(ref32), '.3f')} | {fmt(seconds_of(ref_low), '.3f')} "
              f"| {fmt(seconds_of(tes_low), '.3f')} "
              f"| {fmt(r.get('speed_vs_reference_fp32'), '.2f')} "
              f"| {fmt(r.get('speed_vs_reference_' + key), '.2f')} "
              f"| {fmt(gb_of(ref32), '.2f')} / {fmt(gb_of(ref_low), '.2f')} / "
              f"{fmt(gb_of(tes_low), '.2f')} "
              f"| {fmt(r.get('memory_vs_reference_fp32'), '.2f')} "
              f"| {fmt(r.get('memory_vs_reference_' + key), '.2f')} |")


def print_tables(runs, rows, args):
    if "fp32" in args.precisions:
        print("\n### fp32: Tessera vs reference\n")
        print("| family | batch | reference s/call | Tessera s/call | speed ratio "
              "| peak RSS ref / Tessera (GB) | memory ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            ref = find(runs, row["family"], row["batch"], "reference", "fp32")
            tes = find(runs, row["family"], row["batch"], "tessera", "fp32")
            r = row.get("fp32", {})
            print(f"| {FAMILY_NAMES[row['family']]} | {row['batch']} "
                  f"| {fmt(seconds_of(ref), '.3f')} "
                  f"| {fmt(seconds_of(tes), '.3f')} | {fmt(r.get('speed'), '.2f')} "
                  f"| {fmt(gb_of(ref), '.2f')} / {fmt(gb_of(tes), '.2f')} "
                  f"| {fmt(r.get('memory'), '.2f')} |")
    # The lower precisions: Tessera's against the reference's fp32 and the reference's own.
    for precision, reference, key in (("bf16", "autocast-bf16", "autocast_bf16"),
                                      ("int8", "dynamic-int8", "dynamic_int8")):
        if precision in args.precisions and any(precision in FAMILY_PRECISIONS[row["family"]]
                                                for row in rows):
            print_lower_precision_table(runs, rows, precision, reference, key)

    print("\n### Phase split (seconds per call)\n")
    print("| family | batch | side | backbone | head / sampling | decode | rest | total |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        for key, split in row["phases_s"].items():
            side = PHASE_ROW_LABELS[key]
            if split is None:
                print(f"| {FAMILY_NAMES[row['family']]} | {row['batch']} | {side} "
                      f"| n/a | n/a | n/a | n/a | n/a |")
                continue
            cells = " | ".join(fmt(split[k], ".3f") for k in
                               ("backbone", "head_or_sampling", "decode", "rest", "total"))
            print(f"| {FAMILY_NAMES[row['family']]} | {row['batch']} | {side} | {cells} |")
    # The two sides draw their phase boundaries slightly differently; say how, so that the
    # columns are not read as exactly like for like.
    print("\nPhases: the reference's backbone includes the vocabulary projection (VAR's "
          "get_logits, HMAR's get_*_logits, the output layer inside LlamaGen's "
          "Transformer.forward) and its sampling column is top-k/top-p/multinomial only; Tessera's "
          "head column holds the projection and the token draw (guidance, top-k/top-p). "
          "backbone + head/sampling is comparable across sides. Reference phases are means "
          "over the timed calls; Tessera's as its sample.json reports them.")


def print_goals(checks, hmar_vs_var, bf16_hardware, flags_source_ok):
    print("\n### Goals\n")
    if not flags_source_ok:
        print("(no CPU flags were reported; bf16 hardware is taken as absent)")
    for c in checks:
        family = FAMILY_NAMES[c["family"]]
        if c["status"] == "n/a":
            print(f"n/a   {family} {c['goal']}: n/a: {c['reason']}")
            continue
        values = ", ".join(f"batch {b}: {v:.2f}" for b, v in c["values"].items())
        missed = (f"  (missed at batch {', '.join(map(str, c['missed_at']))})"
                  if c["missed_at"] else "")
        print(f"{c['status']:<5} {family} {c['goal']} at every batch: {values}{missed}")
    print(f"\nbf16 hardware (avx512_bf16 or amx_bf16): {'yes' if bf16_hardware else 'no'}")
    if hmar_vs_var:
        print("\n### Tessera HMAR vs VAR (fp32)\n")
        for r in hmar_vs_var:
            print(f"Tessera HMAR/VAR fp32 batch {r['batch']}: images/s ratio "
                  f"{fmt(r['images_per_s_ratio'], '.2f')}, peak-memory ratio "
                  f"{fmt(r['peak_rss_ratio'], '.2f')}")


# --------------------------------------------------------------------------- JSON

def write_json_atomically(path, data):
    """Write data so that path holds either the previous file or the complete new one."""
    folder = os.path.dirname(path)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                    dir=folder)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())  # the data must be on disk before the rename makes it visible
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    # Persist the rename itself (the directory entry); best effort where it is not allowed.
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


# --------------------------------------------------------------------------- main

def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    log_name = ("compare_references.log" if args.json_name == DEFAULT_JSON_NAME
                else args.json_name[:-len(".json")] + ".log")
    log_path = os.path.join(args.out, log_name)
    json_path = os.path.join(args.out, args.json_name)
    families = [f for f in FAMILIES if f in args.repos]

    print(f"Tessera vs reference: {', '.join(FAMILY_NAMES[f] for f in families)}; batches "
          f"{','.join(map(str, args.batches))}; precisions {','.join(args.precisions)}; "
          f"warmup {args.warmup}, repeat {args.repeat}, threads {args.threads}")
    skipped = {f: [p for p in args.precisions if p not in FAMILY_PRECISIONS[f]]
               for f in families}
    skipped = {f: ps for f, ps in skipped.items() if ps}
    for family, ps in skipped.items():
        print(f"note: {FAMILY_NAMES[family]} is measured in "
              f"{', '.join(FAMILY_PRECISIONS[family])} only; skipping its {', '.join(ps)}")
    print(f"log: {log_path}", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    with open(log_path, "w") as log:
        log.write(f"compare_references.py started {started.isoformat(timespec='seconds')}\n"
                  f"$ {shlex.join([sys.executable] + sys.argv)}\n")
        try:
            runs, reference_meta, tessera_meta = measure_all(args, log)
        except RunFailed as err:
            log.write(f"\nFAILED: {err}\n")
            # Say so when an older result file is still there, lest it be read as this run's.
            stale = (f"; the {json_path} there is from an earlier run"
                     if os.path.exists(json_path) else "")
            sys.exit(f"error: {err}\n  its output is in {log_path}\n  "
                     f"no {os.path.basename(json_path)} was written{stale}")

    # Both sides must have used the thread count asked for, or the ratios compare unlike runs.
    machine = (tessera_meta or {}).get("machine") or {}
    warnings = []
    if machine.get("threads") not in (None, args.threads):
        warnings.append(f"Tessera ran with {machine['threads']} threads, not {args.threads}")
    for family, meta in reference_meta.items():
        if meta.get("threads") not in (None, args.threads):
            warnings.append(f"reference {family} ran with {meta['threads']} threads, "
                            f"not {args.threads}")

    rows = compute_ratios(runs, families, args.batches)
    hmar_vs_var = tessera_hmar_vs_var(runs, args.batches) if "fp32" in args.precisions else []
    flags = cpu_flags(tessera_meta, reference_meta)
    bf16_hardware = any(f in flags for f in BF16_CPU_FLAGS)
    checks = goal_checks(rows, families, bf16_hardware)

    torch_versions = sorted({m.get("torch") for m in reference_meta.values() if m.get("torch")})
    cpu_names = [n for n in (machine.get("cpu"), machine.get("cpu_model")) if n]
    print(f"\nmachine: {' / '.join(cpu_names) or 'unknown'}, "
          f"{machine.get('logical_cpus', '?')} logical CPUs; reference torch "
          f"{', '.join(torch_versions) or 'unknown'}")
    for family, meta in reference_meta.items():
        print(f"reference {FAMILY_NAMES[family]} @ {(meta.get('commit') or 'unknown')[:10]}: "
              + ", ".join(f"{k}={v}" for k, v in (meta.get("settings") or {}).items()
                          if k != "settings_read_from"))
    for family, meta in reference_meta.items():
        print(f"labels: reference {FAMILY_NAMES[family]}: {meta.get('labels')}; "
              f"Tessera {tessera_model(family)}: {TESSERA_LABELS}")
    for w in warnings:
        print(f"warning: {w}")
    print_tables(runs, rows, args)
    print_goals(checks, hmar_vs_var, bf16_hardware, bool(flags))

    report = {
        "generated_by": "bench/compare_references.py",
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "command": [sys.executable] + sys.argv,
        "machine": machine,
        "tessera": {"sample_bench": args.sample_bench,
                    "models": {f: tessera_model(f) for f in families},
                    "labels": TESSERA_LABELS,
                    "meta": tessera_meta},
        "torch": torch_versions[0] if len(torch_versions) == 1 else torch_versions,
        "references": {
            family: {"repo": args.repos[family], "commit": meta.get("commit"),
                     "commit_source": meta.get("commit_source"),
                     "torch": meta.get("torch"), "depth": meta.get("depth"),
                     "model": meta.get("model"), "grad_mode": meta.get("grad_mode"),
                     "settings": meta.get("settings"), "cpu": meta.get("cpu"),
                     "labels": meta.get("labels"), "notes": meta.get("notes_by_precision"),
                     "phase_definitions": meta.get("phase_definitions")}
            for family, meta in reference_meta.items()},
        "warmup": args.warmup,
        "repeat": args.repeat,
        "threads": args.threads,
        "batches": args.batches,
        "precisions": args.precisions,
        "precisions_skipped": skipped,
        "protocol": "one process per (family, batch, side, precision), run sequentially; per "
                    "(family, batch): reference fp32, Tessera fp32, reference autocast-bf16, "
                    "Tessera bf16, reference dynamic-int8, Tessera int8 (those of them the "
                    "family supports), with the side that goes first alternating between "
                    "consecutive (family, batch) pairs (the runs' `order` field)",
        "goal_thresholds": {"fp32_speed": {f: FP32_SPEED_GOALS[f] for f in families},
                            "fp32_memory": GOAL_FP32_MEMORY,
                            "bf16_speed_vs_reference_fp32": GOAL_BF16_VS_REF_FP32,
                            "bf16_speed_vs_reference_autocast_bf16": GOAL_BF16_VS_REF_BF16},
        "bf16_hardware": bf16_hardware,
        "warnings": warnings,
        "runs": runs,
        "ratios": rows,
        "tessera_hmar_vs_var_fp32": hmar_vs_var,
        "goals": checks,
    }
    write_json_atomically(json_path, report)
    print(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
