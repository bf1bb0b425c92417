#!/usr/bin/env python3
"""Data-parallel training overhead: `tessera train` as 1 and 2 ranks, and the gradient buckets.

    ~/.cache/tessera/venv-torch-2.11.0/bin/python bench/distributed_bench.py \\
        --tessera build/bin/tessera --out build/bench/distributed.json

Trains the shipped MaskGIT recipe (configs/generator/maskgit_fashion_mnist.json, its tokenizer
from models/; the first 8,192 training images) for 60 steps in each setting, every one started
fresh in a scratch folder:
one process with 2 intra-op threads and with 1, and 2 ranks of 1 thread each (`--nproc 2`, c10d's
Gloo on loopback) at each bucket size. From the last metrics line (the steps after the first log
interval, so start-up is excluded) it takes steps/s and examples/s (the job's: 2 ranks process
twice the examples per step) and the seconds per step spent waiting for the gradients' all-reduce
after the backward pass (the part the overlap did not hide), and prints the all-reduce share of
the step and the bucket size with the most steps/s at 2 ranks.

On a 2-core machine 2 ranks of 1 thread use the same two cores as 1 process of 2 threads: the
figures measure data-parallel overhead (the all-reduce, the duplicated optimizer step), not
scaling, which needs more cores or machines than ranks' threads.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_sample import cpu_info  # noqa: E402


def run(tessera, base_config, steps, batch, train_images, ranks, threads, bucket_mb, scratch):
    config = json.loads(json.dumps(base_config))
    config.setdefault("data", {})["train_images"] = train_images
    trainer = config["trainer"]
    trainer["steps"] = steps
    trainer["batch_size"] = batch
    trainer["log_every"] = steps // 2
    trainer["checkpoint_every"] = 0
    trainer["progress_bar"] = False
    trainer["resume"] = False
    trainer.setdefault("distributed", {})["bucket_megabytes"] = bucket_mb
    out = os.path.join(scratch, f"r{ranks}_t{threads}_b{bucket_mb}")
    trainer["output_dir"] = out
    path = out + ".json"
    with open(path, "w") as f:
        json.dump(config, f)
    command = [tessera, "train", "--config", path, "--threads", str(threads), "--fresh"]
    if ranks > 1:
        command += ["--nproc", str(ranks)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    steps_per_second = last["steps_per_second"]
    wait = last.get("all_reduce_wait_seconds_per_step", 0.0)
    return {"ranks": ranks, "threads_per_rank": threads,
            "bucket_megabytes": bucket_mb if ranks > 1 else None,
            "steps_per_second": steps_per_second,
            "examples_per_second": last["examples_per_second"],
            "all_reduce_wait_seconds_per_step": wait,
            "all_reduce_share": wait * steps_per_second,
            "wall_seconds": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tessera", default="build/bin/tessera")
    parser.add_argument("--config", default="configs/generator/maskgit_fashion_mnist.json")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32, help="examples per rank and step")
    parser.add_argument("--train-images", type=int, default=8192,
                        help="the first N training images (every rank encodes them first)")
    parser.add_argument("--buckets", default="1,5,25", help="bucket sizes in MB, at 2 ranks")
    parser.add_argument("--out", default="build/bench/distributed.json")
    args = parser.parse_args()

    with open(args.config) as f:
        base = json.load(f)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    version = subprocess.run([args.tessera, "--version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tessera_distributed_bench_") as scratch:
        settings = [(1, 2, 25), (1, 1, 25)]
        settings += [(2, 1, float(b)) for b in args.buckets.split(",")]
        for ranks, threads, bucket in settings:
            row = run(args.tessera, base, args.steps, args.batch, args.train_images, ranks, threads,
                      bucket, scratch)
            rows.append(row)
            print(f"ranks {ranks} x {threads} thread(s)"
                  + (f", buckets {bucket:g} MB" if ranks > 1 else "")
                  + f": {row['steps_per_second']:.3f} steps/s, "
                  f"{row['examples_per_second']:.1f} examples/s, all-reduce wait "
                  f"{1000 * row['all_reduce_wait_seconds_per_step']:.1f} ms/step "
                  f"({100 * row['all_reduce_share']:.1f} % of the step)", flush=True)
    baseline = rows[0]
    for row in rows:
        row["examples_per_second_vs_one_process_two_threads"] = (
            row["examples_per_second"] / baseline["examples_per_second"])
    two = [r for r in rows if r["ranks"] == 2]
    chosen = max(two, key=lambda r: r["steps_per_second"])
    print(f"2 ranks vs 1 process of 2 threads: "
          f"{chosen['examples_per_second_vs_one_process_two_threads']:.2f}x the examples/s "
          f"(best bucket size {chosen['bucket_megabytes']:g} MB); on 2 cores this is overhead, "
          "not scaling")
    result = {"generated_by": "bench/distributed_bench.py", "command": sys.argv,
              "started_utc": started, "tessera": version,
              "machine": {"cpu": cpu_info(), "logical_cpus": os.cpu_count()},
              "config": args.config, "steps": args.steps, "batch_per_rank": args.batch,
              "train_images": args.train_images,
              "rows": rows, "best_bucket_megabytes": chosen["bucket_megabytes"]}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
