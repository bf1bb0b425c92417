"""Crash safety of `tessera train`: a run killed with SIGKILL at any moment, even while it writes
its checkpoint, leaves a checkpoint that parses, no temporary file that could pass for the
checkpoint, and a state the next run resumes from (Note [Atomic writes], Note [Training
checkpoints]).

A tiny MaskGIT (the shipped config's parts, one block of width 64) trains on 256 Fashion-MNIST
images with a checkpoint after every step, so the checkpoint is rewritten all the time. The run is
started and killed KILLS times, each run after a random number (1 to MOST_STEPS_PER_RUN) of its
checkpoint writes: half of the kills land the moment the next temporary checkpoint file is seen
(the write is under way), the others at a random moment within a step. The random numbers come
from a fixed seed (DEFAULT_SEED, or $TESSERA_CRASH_SEED), so that a failure can be rerun with the
same draws; the moments themselves still depend on the machine's speed. After each kill:
  (a) <out>/checkpoint.safetensors parses with an independent safetensors parser (8-byte
      little-endian header length, JSON header, every tensor's data_offsets inside the data
      section and matching its dtype and shape, the tensors tiling the section), its step never
      goes back, and it is a training checkpoint;
  (b) every other file is one the trainer writes, or the killed writer's temporary file
      (<name>.tmp.<pid>.<16 hex>), which no reader takes for a safetensors file; the temporary
      files of earlier kills are gone (each run removes those of writers that are no longer
      running);
then (c) a last run, not killed, resumes from the last checkpoint's step (> 0; its output says
"trained steps S..N"), finishes, writes generator.safetensors, leaves no temporary file, and its
metrics.jsonl holds every logged step once.

Run by ctest (label hardening) with the project venv's python (only the standard library is used):
    python tests/hardening/crash_safety_test.py <repo root> <tessera binary>
Data: $TESSERA_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist. Without it the script
prints "SKIPPED: missing prerequisite: ..." and exits 77 (ctest: SKIP_RETURN_CODE 77), or, where
TESSERA_REQUIRE_ALL is set to anything but "" or "0" (CI), prints "FAILED: missing prerequisite:
..." and exits 1 (the convention of tests/common/prerequisite.h).
"""

import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time

ROOT, TESSERA = sys.argv[1], sys.argv[2]
KILLS = 8
STEPS = 240
# A killed run trains at most this many steps (plus one), so the kills are spread over the first
# two thirds of the run whatever the speed of the machine.
MOST_STEPS_PER_RUN = 20
# The kill moments' seed unless TESSERA_CRASH_SEED says otherwise: a run of `make test` draws the
# same numbers every time.
DEFAULT_SEED = 20240917
DATA = os.environ.get("TESSERA_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1}
TRAINER_FILES = {"config.json", "metrics.jsonl", "checkpoint.safetensors", "generator.safetensors",
                 "weights.safetensors", "weights_ema.safetensors"}
TEMPORARY = re.compile(r"^(?P<target>.+)\.tmp\.(?P<pid>[0-9]+)\.[0-9a-f]{16}$")
failures = []
started = time.monotonic()


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message, flush=True)
    return condition


def parse_safetensors(path):
    """The header of a safetensors file, checked byte by byte; raises ValueError when invalid."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, fewer than the length field")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"header length {n} reaches past the end ({len(data)} bytes)")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("a metadata value is not a string")
    body = len(data) - 8 - n
    spans = []
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= body:
            raise ValueError(f"{name}: data_offsets [{begin}, {end}] outside the data ({body} B)")
        count = 1
        for d in info["shape"]:
            count *= d
        if end - begin != count * DTYPE_BYTES[info["dtype"]]:
            raise ValueError(f"{name}: {end - begin} bytes for {info['dtype']} {info['shape']}")
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise ValueError(f"a gap or an overlap at byte {covered} of the data section")
        covered = end
    if covered != body:
        raise ValueError(f"the tensors cover {covered} of the {body} data bytes")
    return header, metadata


def write_config(folder):
    with open(os.path.join(ROOT, "configs/generator/maskgit_fashion_mnist.json")) as f:
        config = json.load(f)
    config["tokenizer"] = os.path.join(ROOT, config["tokenizer"])
    backbone = config["generator"]["backbone"]
    backbone.update(width=64, depth=1, num_heads=2)
    config["generator"]["head"]["discrete"]["width"] = 64
    trainer = config["trainer"]
    trainer.update(steps=STEPS, batch_size=16, log_every=5, checkpoint_every=1, threads=1,
                   progress_bar=False)
    trainer["lr_schedule"]["warmup_steps"] = 10
    config["data"] = {"directory": DATA, "train_images": 256, "encode_batch_size": 256}
    path = os.path.join(folder, "tiny.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return path


def temporaries(out):
    """(name, target, pid) of every temporary file in `out`."""
    found = []
    for name in os.listdir(out) if os.path.isdir(out) else []:
        m = TEMPORARY.match(name)
        if m:
            found.append((name, m.group("target"), int(m.group("pid"))))
    return found


def checkpoint_step(out, last_step, when):
    """Checks (a); returns the checkpoint's step (0 when there is none yet)."""
    path = os.path.join(out, "checkpoint.safetensors")
    if not os.path.exists(path):
        return 0
    try:
        header, metadata = parse_safetensors(path)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as e:
        check(False, f"{when}: checkpoint.safetensors does not parse: {e}")
        return last_step
    check(metadata.get("tessera.format") == "tessera-training-checkpoint-1",
          f"{when}: the checkpoint's tessera.format is {metadata.get('tessera.format')!r}")
    check(any(k.startswith("param/") for k in header) and any(k.startswith("ema/") for k in header)
          and "rng/task" in header, f"{when}: the checkpoint lacks param/, ema/ or rng/task")
    step = int(metadata.get("tessera.step", "-1"))
    check(step >= last_step, f"{when}: the checkpoint went back from step {last_step} to {step}")
    return step


def check_files(out, killed_pid, when):
    """Checks (b): only the trainer's files and the killed writer's temporary files."""
    for name in os.listdir(out):
        if name in TRAINER_FILES:
            continue
        m = TEMPORARY.match(name)
        if not check(m is not None, f"{when}: unexpected file {name!r} in the output folder"):
            continue
        check(m.group("target") in TRAINER_FILES,
              f"{when}: temporary file {name!r} of an unknown target")
        check(not name.endswith(".safetensors"),
              f"{when}: temporary file {name!r} ends in .safetensors")
        check(int(m.group("pid")) == killed_pid,
              f"{when}: {name!r} was left by pid {m.group('pid')}, an earlier run: the runs since "
              f"should have removed it")


def train(config, out):
    return subprocess.Popen([TESSERA, "train", "--config", config, "--out", out],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after(process, out, writes, while_writing, rng, timeout=120.0):
    """Counts the run's checkpoint writes (each has its own temporary file name) and, once
    `writes` have been seen, sends SIGKILL: the moment the next write's temporary file is seen
    (while_writing), else after a random pause shorter than a step. Returns whether the kill
    landed while a temporary checkpoint file existed."""
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        current = {name for name, target, pid in temporaries(out)
                   if pid == process.pid and target == "checkpoint.safetensors"}
        if while_writing and len(seen) >= writes and current - seen:
            process.kill()
            return True
        seen |= current
        if not while_writing and len(seen) >= writes:
            time.sleep(rng.uniform(0.0, 0.05))
            process.kill()
            return False
    process.kill()
    return False


def main():
    if not os.path.isdir(DATA):
        what = f"Fashion-MNIST at {DATA} (set TESSERA_FASHION_MNIST_DIR)"
        if os.environ.get("TESSERA_REQUIRE_ALL", "") not in ("", "0"):
            print(f"FAILED: missing prerequisite: {what} (TESSERA_REQUIRE_ALL is set: the crash "
                  "safety check must run)", flush=True)
            return 1
        print(f"SKIPPED: missing prerequisite: {what}", flush=True)
        return 77
    seed = int(os.environ.get("TESSERA_CRASH_SEED") or DEFAULT_SEED)
    print(f"kill moments drawn with seed {seed} (set TESSERA_CRASH_SEED to draw others)")
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="tessera-crash-") as folder:
        config = write_config(folder)
        out = os.path.join(folder, "out")
        step, mid_write = 0, 0
        for k in range(KILLS):
            when = f"kill {k + 1}"
            process = train(config, out)
            caught = kill_after(process, out, writes=rng.randint(1, MOST_STEPS_PER_RUN),
                                while_writing=k % 2 == 0, rng=rng)
            _, stderr = process.communicate()
            check(process.returncode == -9,
                  f"{when}: the run ended with status {process.returncode}, not by the kill "
                  f"(did it finish its {STEPS} steps?): {stderr[-2000:]}")
            left = [t for t in temporaries(out) if t[2] == process.pid]
            mid_write += bool(left)
            step = checkpoint_step(out, step, when)
            check_files(out, process.pid, when)
            print(f"{when}: {'while writing' if caught else 'at a random moment'}, checkpoint at "
                  f"step {step}, {len(left)} temporary file(s) left", flush=True)
        check(mid_write >= 1, "no kill landed while a checkpoint was being written")

        # (c) The last run resumes and finishes.
        result = subprocess.run([TESSERA, "train", "--config", config, "--out", out],
                                capture_output=True, text=True, timeout=300)
        check(result.returncode == 0, f"the final run failed: {result.stderr[-3000:]}")
        m = re.search(r"trained steps (\d+)\.\.(\d+)", result.stdout)
        if check(m is not None, f"the final run did not say which steps it trained: "
                                f"{result.stdout[-2000:]}"):
            start, end = int(m.group(1)), int(m.group(2))
            check(start > 0, "the final run started from step 0 instead of resuming")
            check(start == step, f"the final run resumed from step {start}, the checkpoint held "
                                 f"step {step}")
            check(end == STEPS, f"the final run stopped at step {end}, not {STEPS}")
            print(f"final run: resumed at step {start}, finished at step {end}")
        check(not temporaries(out), f"temporary files left after the final run: {temporaries(out)}")
        for name in ("checkpoint.safetensors", "generator.safetensors"):
            try:
                parse_safetensors(os.path.join(out, name))
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                check(False, f"after the final run, {name} does not parse: {e}")
        with open(os.path.join(out, "metrics.jsonl")) as f:
            logged = [json.loads(line)["step"] for line in f if line.strip()]
        check(logged == sorted(set(logged)) and logged and logged[-1] == STEPS,
              f"metrics.jsonl steps are not each logged once, in order, up to {STEPS}: {logged}")
        print(f"{KILLS} kills ({mid_write} while writing a checkpoint) in "
              f"{time.monotonic() - started:.1f} s")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("crash safety: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
