"""tools/convert_checkpoint.py: checkpoints in the shapes researchers hold (plain state dicts,
wrapped ones, DDP prefixes, VAR's trainer state) become safetensors files whose tensors, read back
by an independent parser of the format (header length, JSON header, offsets; torch.frombuffer),
equal the originals bit for bit, and that `tessera convert` reads; bad input gets a clear error.
With the VAR parity fixture (../shared/parity/var-tiny or $TESSERA_PARITY_DIR, any size), the
user's whole path: the reference transformer saved as a .pth, converted with its architecture as
metadata, and `tessera sample --weights … --vae … --reference-seeding` gives the reference's sampled
tokens; the same for LlamaGen's GPT and VQ checkpoints with the LlamaGen fixture
(../shared/parity/llamagen-tiny or $TESSERA_PARITY_LLAMAGEN_DIR), saved as its training scripts
save them (an argparse.Namespace beside the weights), and MAR's (the EMA weights of main_mar.py's
checkpoint, the KL-16 VAE) with the MAR fixture (../shared/parity/mar-tiny or
$TESSERA_PARITY_MAR_DIR), whose sampled tokens come out within 1e-4. Without a fixture the other checks run and the script exits 77 (skipped), or 1 under
TESSERA_REQUIRE_ALL; any failed check exits 1.

Run by ctest (label compat) with the project venv's python:
    python tests/compat/convert_checkpoint_test.py <repo root> <tessera binary>
"""

import argparse
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile

import torch

ROOT, TESSERA = sys.argv[1], sys.argv[2]
CONVERTER = os.path.join(ROOT, "tools", "convert_checkpoint.py")
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    check(n % 8 == 0, f"{path}: header length {n} is not a multiple of 8")
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(body[begin:end])
        dtype = DTYPES[info["dtype"]]
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
    return tensors, metadata


def run(*args):
    return subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)


def sample_state(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "word_embed.weight": torch.randn(4, 3, generator=g),
        "blocks.0.attn.scale_mul_1H11": torch.randn(1, 2, 1, 1, generator=g).to(torch.bfloat16),
        "blocks.0.ffn.fc1.bias": torch.randn(5, generator=g).to(torch.float16),
        "lvl_1L": torch.arange(6).view(1, 6),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }


def same(a, b):
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


with tempfile.TemporaryDirectory() as tmp:
    def path(name):
        return os.path.join(tmp, name)

    state, other = sample_state(1), sample_state(2)

    # A plain state dict: every tensor back, key names and dtypes kept, metadata written.
    torch.save(state, path("plain.pth"))
    r = run(path("plain.pth"), path("plain.safetensors"), "--metadata", "depth=2", "patch_nums=1,2")
    check(r.returncode == 0, f"plain: {r.stderr}")
    got, meta = read_safetensors(path("plain.safetensors"))
    check(same(got, state), "plain: tensors differ")
    check(meta.get("depth") == "2" and meta.get("patch_nums") == "1,2", f"plain: metadata {meta}")
    check(meta.get("tessera.converted_from") == "plain.pth", f"plain: metadata {meta}")

    # Tessera reads it: `tessera convert` casts it to fp32.
    r2 = subprocess.run([TESSERA, "convert", "--in", path("plain.safetensors"), "--dtype", "fp32",
                         "--out", path("plain32.safetensors")], capture_output=True, text=True)
    check(r2.returncode == 0, f"tessera convert could not read the output: {r2.stderr}")
    if r2.returncode == 0:
        cast, _ = read_safetensors(path("plain32.safetensors"))
        check(torch.equal(cast["blocks.0.ffn.fc1.bias"], state["blocks.0.ffn.fc1.bias"].float()),
              "tessera convert: values changed")

    # Wrapped: {'model': ...} with training state beside it; nested {'state_dict': {'module': ...}}.
    torch.save({"model": state, "epoch": 3, "args": {"lr": 0.1}}, path("wrapped.pth"))
    r = run(path("wrapped.pth"), path("wrapped.safetensors"))
    check(r.returncode == 0, f"wrapped: {r.stderr}")
    check(same(read_safetensors(path("wrapped.safetensors"))[0], state), "wrapped: tensors differ")
    torch.save({"state_dict": {"module": state}}, path("nested.pth"))
    r = run(path("nested.pth"), path("nested.safetensors"))
    check(r.returncode == 0 and same(read_safetensors(path("nested.safetensors"))[0], state),
          f"nested: {r.stderr}")

    # DDP's 'module.' prefix is removed.
    torch.save({"module." + k: v for k, v in state.items()}, path("ddp.pth"))
    r = run(path("ddp.pth"), path("ddp.safetensors"))
    check(r.returncode == 0 and same(read_safetensors(path("ddp.safetensors"))[0], state),
          f"ddp: {r.stderr}")

    # VAR's trainer state: trainer.var_wo_ddp.
    torch.save({"trainer": {"var_wo_ddp": state, "var_opt": {"step": 7}}, "epoch": 1},
               path("var_trainer.pth"))
    r = run(path("var_trainer.pth"), path("var_trainer.safetensors"))
    check(r.returncode == 0 and same(read_safetensors(path("var_trainer.safetensors"))[0], state),
          f"var trainer: {r.stderr}")

    # Two state dicts: ambiguous without --key, chosen with it.
    torch.save({"model": state, "model_ema": other}, path("two.pth"))
    r = run(path("two.pth"), path("two.safetensors"))
    check(r.returncode == 1 and "--key" in r.stderr and "model_ema" in r.stderr,
          f"two: expected an error asking for --key, got {r.returncode} {r.stderr}")
    r = run(path("two.pth"), path("two.safetensors"), "--key", "model_ema")
    check(r.returncode == 0 and same(read_safetensors(path("two.safetensors"))[0], other),
          f"two --key model_ema: {r.stderr}")
    r = run(path("two.pth"), path("two.safetensors"), "--key", "ema")
    check(r.returncode == 1 and "no 'ema'" in r.stderr, f"two --key ema: {r.stderr}")

    # Not tensors: a non-tensor leaf is named.
    torch.save({"weight": torch.zeros(2), "note": "hello"}, path("mixed.pth"))
    r = run(path("mixed.pth"), path("mixed.safetensors"))
    check(r.returncode == 1 and "'note'" in r.stderr, f"mixed: {r.stderr}")

    # A pickle that needs code to load is refused, not executed.
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo executed > " + path("pwned"),))
    with open(path("evil.pth"), "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    r = run(path("evil.pth"), path("evil.safetensors"))
    check(r.returncode == 1 and "weights_only" in r.stderr, f"evil: {r.stderr}")
    check(not os.path.exists(path("pwned")), "evil: the pickle's code ran")

    # A missing file, and an existing output is never half-written on error.
    r = run(path("absent.pth"), path("plain.safetensors"))
    check(r.returncode == 1 and "no such file" in r.stderr, f"absent: {r.stderr}")
    check(same(read_safetensors(path("plain.safetensors"))[0], state),
          "a failed conversion damaged an existing output")
    check(not any(n.startswith(".convert_checkpoint.") for n in os.listdir(tmp)),
          "temporary files left behind")

    # Without metadata and without --preset: a clear error naming the way out.
    r = subprocess.run([TESSERA, "sample", "--weights", path("plain.safetensors"),
                        "--out", path("x.png")], capture_output=True, text=True)
    check(r.returncode != 0 and "--preset" in r.stderr, f"no metadata: {r.stderr}")

    # The published-checkpoint path end to end, on the fixture (any size: every value comes from
    # its files).
    fixture = os.environ.get("TESSERA_PARITY_DIR") or os.path.join(ROOT, "..", "shared", "parity",
                                                                   "var-tiny")
    missing_fixture = fixture if not os.path.isdir(fixture) else next(
        (os.path.join(fixture, name) for name in ("var.safetensors", "vqvae.safetensors",
                                                  "io.safetensors")
         if not os.path.exists(os.path.join(fixture, name))), None)
    if missing_fixture is None:
        var, var_meta = read_safetensors(os.path.join(fixture, "var.safetensors"))
        io, io_meta = read_safetensors(os.path.join(fixture, "io.safetensors"))
        # As VAR's trainer saves it (trainer.var_wo_ddp), without metadata: the converter adds it.
        torch.save({"trainer": {"var_wo_ddp": var}, "epoch": 1}, path("var_fixture.pth"))
        keys = ["patch_nums", "vocab_size", "Cvae", "ch", "depth", "width", "heads",
                "num_classes", "share_quant_resi", "shared_aln", "attn_l2_norm", "norm_eps",
                "cfg", "top_k", "top_p"]
        pairs = [f"{k}={var_meta[k]}" for k in keys]
        r = run(path("var_fixture.pth"), path("var_fixture.safetensors"), "--metadata", *pairs)
        check(r.returncode == 0, f"fixture conversion: {r.stderr}")
        labels = ",".join(str(int(v)) for v in io["label"].tolist())
        r = subprocess.run([TESSERA, "sample", "--weights", path("var_fixture.safetensors"),
                            "--vae", os.path.join(fixture, "vqvae.safetensors"),
                            "--classes", labels, "--per-class", "1",
                            "--seed", io_meta["sample_seed"], "--reference-seeding",
                            "--out", path("var_fixture.png"),
                            "--save-tokens", path("var_fixture_tokens.safetensors")],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"tessera sample --weights: {r.stdout}{r.stderr}")
        if r.returncode == 0:
            tokens, _ = read_safetensors(path("var_fixture_tokens.safetensors"))
            scales = len(io_meta["patch_nums"].split(","))
            check(sorted(k for k in io if k.startswith("sampled_idx.")) ==
                  sorted(f"sampled_idx.{s}" for s in range(scales)),
                  f"the fixture's sampled_idx.* are not one per scale of {io_meta['patch_nums']}")
            saved = sorted(k for k in tokens if k.startswith("scale_"))
            check(saved == sorted(f"scale_{s}" for s in range(scales)),
                  f"tessera sample saved {saved}, not one token tensor per scale")
            for s in range(scales):
                if f"scale_{s}" in tokens and f"sampled_idx.{s}" in io:
                    check(torch.equal(tokens[f"scale_{s}"].long(), io[f"sampled_idx.{s}"].long()),
                          f"tessera sample: scale {s} differs from the reference")
            check(os.path.getsize(path("var_fixture.png")) > 0, "no grid written")

    # LlamaGen's checkpoints as its training scripts save them ({"model": ..., "args": Namespace,
    # "steps": ...}) for the GPT and the VQ tokenizer: converted, then sampled with reference
    # seeding by the exponential race (torch 2.x), the fixture's sampled tokens.
    llamagen = os.environ.get("TESSERA_PARITY_LLAMAGEN_DIR") or os.path.join(
        ROOT, "..", "shared", "parity", "llamagen-tiny")
    if all(os.path.exists(os.path.join(llamagen, n))
           for n in ("model.safetensors", "tokenizer.safetensors", "io.safetensors")):
        gpt, gpt_meta = read_safetensors(os.path.join(llamagen, "model.safetensors"))
        vq, _ = read_safetensors(os.path.join(llamagen, "tokenizer.safetensors"))
        io, io_meta = read_safetensors(os.path.join(llamagen, "io.safetensors"))
        args = argparse.Namespace(gpt_model="GPT-tiny", ema=False)
        torch.save({"model": gpt, "optimizer": {}, "steps": 10, "args": args}, path("gpt.pt"))
        torch.save({"model": vq, "steps": 10, "args": args}, path("vq.pt"))
        pairs = [f"{k}={v}" for k, v in gpt_meta.items()
                 if k.startswith("gpt.") or k in ("grid_size", "cfg_scale", "cfg_interval",
                                                   "temperature", "top_k", "top_p")]
        r = run(path("gpt.pt"), path("gpt.safetensors"), "--metadata", *pairs)
        check(r.returncode == 0 and "from 'model'" in r.stdout, f"LlamaGen GPT: {r.stderr}")
        r = run(path("vq.pt"), path("vq.safetensors"))
        check(r.returncode == 0, f"LlamaGen VQ: {r.stderr}")
        labels = ",".join(str(int(v)) for v in io["label"].tolist())
        r = subprocess.run([TESSERA, "sample", "--weights", path("gpt.safetensors"),
                            "--vae", path("vq.safetensors"), "--classes", labels,
                            "--per-class", "1", "--seed", io_meta["sample_seed"],
                            "--reference-seeding", "--reference-multinomial", "exponential_race",
                            "--out", path("llamagen.png"),
                            "--save-tokens", path("llamagen_tokens.safetensors")],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"tessera sample, LlamaGen: {r.stdout}{r.stderr}")
        if r.returncode == 0:
            tokens, _ = read_safetensors(path("llamagen_tokens.safetensors"))
            check(torch.equal(tokens["scale_0"].long(), io["sampled_tokens"].long()),
                  "tessera sample: LlamaGen's tokens differ from the reference's")
        # The VQ file's truncated state dict: the error names the missing key in LlamaGen's names.
        del vq["decoder.conv_out.weight"]
        torch.save({"model": vq}, path("vq_truncated.pt"))
        run(path("vq_truncated.pt"), path("vq_truncated.safetensors"))
        r = subprocess.run([TESSERA, "sample", "--weights", path("gpt.safetensors"),
                            "--vae", path("vq_truncated.safetensors"), "--classes", labels,
                            "--out", path("x.png")], capture_output=True, text=True)
        check(r.returncode != 0 and "decoder.conv_out.weight" in r.stderr,
              f"truncated LlamaGen VQ: {r.stderr}")
    elif missing_fixture is None:
        missing_fixture = llamagen

    # MAR's checkpoints as main_mar.py saves them ({"model", "model_ema", "optimizer", "epoch",
    # "scaler", "args"}; the VAE's kl16.ckpt as {"model": ...}): the EMA weights converted, the
    # architecture read from the tensors (head counts and sampling settings as metadata), then
    # sampled with reference seeding (numpy's orders, torch's stream): the fixture's tokens.
    mar = os.environ.get("TESSERA_PARITY_MAR_DIR") or os.path.join(
        ROOT, "..", "shared", "parity", "mar-tiny")
    if all(os.path.exists(os.path.join(mar, n))
           for n in ("model.safetensors", "vae.safetensors", "io.safetensors")):
        model, model_meta = read_safetensors(os.path.join(mar, "model.safetensors"))
        vae, _ = read_safetensors(os.path.join(mar, "vae.safetensors"))
        io, io_meta = read_safetensors(os.path.join(mar, "io.safetensors"))
        args = argparse.Namespace(model="mar_tiny", cfg=2.0)
        zeroed = {k: torch.zeros_like(v) for k, v in model.items()}
        torch.save({"model": zeroed, "model_ema": model, "optimizer": {}, "epoch": 3,
                    "scaler": {}, "args": args}, path("mar.pth"))
        torch.save({"model": vae}, path("kl.ckpt"))
        pairs = [f"{k}={v}" for k, v in model_meta.items()
                 if k in ("mar.encoder_num_heads", "mar.decoder_num_heads", "mar.num_sampling_steps")
                 or k.startswith("sample.")]
        r = run(path("mar.pth"), path("mar.safetensors"), "--key", "model_ema", "--metadata",
                *pairs)
        check(r.returncode == 0, f"MAR: {r.stderr}")
        r = run(path("kl.ckpt"), path("kl.safetensors"))
        check(r.returncode == 0, f"MAR KL-16: {r.stderr}")
        labels = ",".join(str(int(v)) for v in io["sample.labels"].tolist())
        r = subprocess.run([TESSERA, "sample", "--weights", path("mar.safetensors"),
                            "--vae", path("kl.safetensors"), "--classes", labels,
                            "--per-class", "1", "--seed", io_meta["sample_seed"],
                            "--reference-seeding", "--out", path("mar.png"),
                            "--save-tokens", path("mar_tokens.safetensors")],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"tessera sample, MAR: {r.stdout}{r.stderr}")
        if r.returncode == 0:
            tokens, _ = read_safetensors(path("mar_tokens.safetensors"))
            # sample.tokens is [B, C, h, w]; Tessera's tokens are [B, h·w, C] (MAR's patchify).
            reference = io["sample.tokens"].flatten(2).transpose(1, 2)
            error = ((tokens["scale_0"] - reference).norm() / reference.norm()).item()
            check(error < 1e-4, f"tessera sample: MAR's tokens differ from the reference's "
                                f"({error:.3g} relative)")
        # A truncated state dict: the error names the missing tensor in MAR's names.
        del model["diffusion_pos_embed_learned"]
        torch.save({"model": model}, path("mar_truncated.pth"))
        run(path("mar_truncated.pth"), path("mar_truncated.safetensors"), "--metadata", *pairs)
        r = subprocess.run([TESSERA, "sample", "--weights", path("mar_truncated.safetensors"),
                            "--vae", path("kl.safetensors"), "--classes", labels,
                            "--out", path("x.png")], capture_output=True, text=True)
        check(r.returncode != 0 and "diffusion_pos_embed_learned" in r.stderr,
              f"truncated MAR: {r.stderr}")
    elif missing_fixture is None:
        missing_fixture = mar

print("convert_checkpoint: %d failure(s)" % len(failures))
if failures:
    sys.exit(1)
if missing_fixture is not None:
    # A missing prerequisite is a skip (ctest: SKIP_RETURN_CODE 77), or a failure where every
    # reference check must run (TESSERA_REQUIRE_ALL, as CI sets it).
    what = (f"parity fixture at {missing_fixture} (set TESSERA_PARITY_DIR, "
            "TESSERA_PARITY_LLAMAGEN_DIR and TESSERA_PARITY_MAR_DIR)")
    if os.environ.get("TESSERA_REQUIRE_ALL", "") not in ("", "0"):
        print(f"FAILED: missing prerequisite: {what} (TESSERA_REQUIRE_ALL is set: the end-to-end "
              "sampling check must run)")
        sys.exit(1)
    print(f"SKIPPED: missing prerequisite: {what}; the end-to-end sampling check did not run")
    sys.exit(77)
sys.exit(0)
