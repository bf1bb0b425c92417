#!/usr/bin/env python3
"""Time the reference Python samplers of VAR, HMAR, LlamaGen and MAR on the CPU, to compare with Tessera.

What it measures: the wall-clock time of ONE call of the reference's own class-conditional
sampling entry point -- VAR's `VAR.autoregressive_infer_cfg` or HMAR's `HMAR.generate` --
from class labels to decoded 256x256 images (the VQ-VAE decode is inside that call, as the
references return images), with the reference's published sampling settings, for one or more
batch sizes. LlamaGen's entry point returns token indices, so for it ONE call is what its
autoregressive/sample/sample_c2i.py times in two pieces: `generate(gpt_model, c_indices, 256,
...)` (which sets up the KV caches itself on every call) followed by
`vq_model.decode_code(index_sample, qzshape)`, together; MAR's is what main_mar.py's evaluate()
times: `MAR.sample_tokens(bsz, num_iter, cfg, cfg_schedule, labels, temperature)` followed by
`vae.decode(tokens / 0.2325)`. Per batch size it reports the
median/min/max seconds per call, images/s (= batch / median) and the peak resident set size
of the process during that batch's calls. With --profile the call's time is split into
backbone / sampling / decode / rest.

The weights are random (seeded), built through the reference's own constructors: the speed of
these models does not depend on the weight values, and no checkpoint can be downloaded here.

The reference code is NOT part of Tessera: it is imported at run time from a git clone given
with --repo, kept outside this repository and never committed. Clone it with e.g.

    git clone https://github.com/FoundationVision/VAR      /work/scratch/refs/VAR       # at 78b9539
    git clone https://github.com/NVlabs/HMAR               /work/scratch/refs/HMAR      # at 595a9df
    git clone https://github.com/FoundationVision/LlamaGen /work/scratch/refs/LlamaGen  # at ce98ec4
    git clone https://github.com/LTH14/mar                 /work/scratch/refs/mar       # at fe470ac

A copy that is not a git clone (an exported tree) records the commit given with --commit, or
else the first word of a COMMIT file in its top folder.

Beyond torch, VAR's and HMAR's model code needs numpy (install it with `pip install --no-deps
numpy` so that pip cannot touch torch). Training-only imports that the model modules drag in
(huggingface_hub, HMAR's utils.misc with wandb/pytz/torchvision) are replaced by small substitutes
when missing; the notes in the output list every such substitute and patch. LlamaGen's model
and tokenizer code needs torch only; LlamaGen is measured in float32 only (--autocast-bf16 and
--dynamic-int8 are refused for it). MAR's model code imports timm (its ViT Block), scipy.stats
and tqdm; install them beside the reference, never into the project venv (timm pulls
torchvision, which would move torch): `pip install --no-deps --target /work/scratch/pylibs timm
torchvision==0.26.0 scipy tqdm pillow pyyaml huggingface_hub filelock fsspec packaging` and run
with PYTHONPATH=/work/scratch/pylibs. MAR is measured in float32 only as well.

Example:

    python bench/reference_sample.py --family var --repo /work/scratch/refs/VAR \\
        --batch 1,4,16 --warmup 1 --repeat 3 --threads 2 --json /tmp/ref_var.json
    python bench/reference_sample.py --family hmar --repo /work/scratch/refs/HMAR \\
        --batch 1 --warmup 0 --repeat 1 --profile
    python bench/reference_sample.py --family llamagen --repo /work/scratch/refs/LlamaGen \\
        --size b --commit ce98ec41803a74a90ce68c40ababa9eaeffeb4ec --batch 1,8 --profile
    PYTHONPATH=/work/scratch/pylibs python bench/reference_sample.py --family mar \\
        --repo /work/scratch/refs/mar --size b --batch 1,8 --profile
"""

import argparse
import ast
import contextlib
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

# The benchmark is CPU-only. Both references pick their device with
# `'cuda' if torch.cuda.is_available() else 'cpu'` at import time (dist.py), and HMAR's
# generate() creates tensors on that device, so a visible GPU would split the work across
# devices. Hiding GPUs before torch is imported makes every auto-detection say CPU.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402  (must come after CUDA_VISIBLE_DEVICES)
import torch.nn as nn  # noqa: E402

# 256 px scale pyramid, as in VAR's demo_sample.ipynb and HMAR's `pn` default.
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

# VAR publishes its sampling settings in demo_sample.ipynb, cell "2. Sample with
# classifier-free guidance": cfg = 4, autoregressive_infer_cfg(..., top_k=900, top_p=0.95,
# g_seed=seed, more_smooth=False) with seed = 0. (Its README gives cfg=1.5, top_p=0.96,
# top_k=900 for FID runs; --cfg/--top-p select those. The cost of a call does not depend on
# them: top-k/top-p always sort the full vocabulary.)
VAR_SETTINGS = {"cfg": 4.0, "top_k": 900, "top_p": 0.95, "more_smooth": False}
VAR_SEED = 0

# HMAR's sample.py uses g_seed=13 (and reads the rest from its config files, see
# hmar_published_settings).
HMAR_SEED = 13

# LlamaGen: the c2i model at 256 px (16 x 16 = 256 tokens from the VQ-16 tokenizer), which
# is Tessera's llamagen-b preset. sample_c2i.py's own defaults are --image-size 384 and
# --precision bf16; everything else (cfg, top-k, ..., seed, class labels) is read from it,
# see llamagen_published_settings.
LLAMAGEN_IMAGE_SIZE = 256
LLAMAGEN_SIZES = ("b", "l", "xl", "xxl", "xxxl", "1b", "3b", "7b")  # GPT_models' "GPT-<SIZE>"

# MAR: mar_base / mar_large / mar_huge with main_mar.py's defaults (read from it, see
# mar_published_settings) and the README's per-size settings (its training and "Evaluation"
# commands: --diffloss_d 6 / 8 / 12 --diffloss_w 1024 / 1280 / 1536, --cfg 2.9 / 3.0 / 3.2
# --cfg_schedule linear --temperature 1.0; main_mar.py's own diffloss defaults are mar_huge's).
# The README evaluates with --num_iter 256; this run keeps main_mar.py's default num_iter 64, as
# Tessera's mar presets do.
MAR_SIZES = {"b": ("mar_base", 2.9, 6, 1024), "l": ("mar_large", 3.0, 8, 1280),
             "h": ("mar_huge", 3.2, 12, 1536)}
MAR_VAE_SCALE = 0.2325  # main_mar.py: sampled_images = vae.decode(sampled_tokens / 0.2325)

# CPU features that decide which LibTorch/oneDNN kernels run; recorded so that results from
# different machines are not compared blindly.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")

# Classes whose reset_parameters both references' builders replace with a no-op "for speed"
# (they always load a checkpoint afterwards). We restore PyTorch's defaults for the parts the
# references leave uninitialised, since torch.empty memory may hold NaNs or denormals, and
# denormals make CPU arithmetic much slower.
RESET_DISABLED = (nn.Linear, nn.LayerNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.Conv1d,
                  nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


# --------------------------------------------------------------------------- small utilities

def git_head(repo):
    """HEAD of the clone at repo; None if repo is not the top of a git work tree (an exported
    tree inside some other repository must not report that repository's commit)."""
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "--show-toplevel", "HEAD"],
                             check=True, capture_output=True, text=True)
        top, head = out.stdout.split()
        if os.path.realpath(top) != os.path.realpath(repo):
            return None
        return head
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def reference_commit(repo, given):
    """(commit, where it came from): the clone's HEAD, else --commit, else <repo>/COMMIT.

    A clone whose HEAD differs from --commit is an error: the JSON must not record a commit
    that is not the code that ran."""
    head = git_head(repo)
    if head is not None:
        if given and not head.startswith(given.lower()):
            sys.exit(f"error: --commit {given} but {repo} is a git clone at {head}")
        return head, "git rev-parse HEAD"
    if given:
        return given, "--commit"
    try:
        with open(os.path.join(repo, "COMMIT")) as f:
            words = f.read().split()
        if words:
            return words[0], "COMMIT file"
    except OSError:
        pass
    return None, None


def cpu_info():
    name, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and name is None:
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"name": name, "flags": [f for f in CPU_FLAGS if f in flags]}


def reset_peak_rss():
    """Reset the kernel's RSS high-water mark (VmHWM); False if this kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and is the peak over the whole process lifetime.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def parse_batches(values):
    batches = []
    for value in values or ["1"]:
        for part in value.split(","):
            part = part.strip()
            if part:
                batches.append(int(part))
    if not batches or any(b < 1 for b in batches):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers: {values}")
    return batches


def import_or_substitute(module_name, make_substitute, notes, why):
    """Import module_name; if it is missing, install make_substitute() under that name instead.

    Only for imports that the model modules pull in but sampling never uses (training or hub
    helpers), so a substitute changes nothing that is timed. Each substitute is reported in `notes`."""
    try:
        __import__(module_name)
    except ImportError as err:
        substitute = make_substitute()
        sys.modules[module_name] = substitute
        parent, _, child = module_name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, substitute)
        notes.append(f"substituted {module_name} ({err.__class__.__name__}: {err}); {why}")


def require_numpy():
    try:
        import numpy  # noqa: F401
    except ImportError:
        sys.exit("error: the reference's VQ-VAE quantizer (models/quant.py) needs numpy; "
                 "install it with `pip install --no-deps numpy` (so pip leaves torch alone)")


@contextlib.contextmanager
def default_init_restored():
    """Let a builder disable reset_parameters, then put the classes back as they were."""
    saved = {cls: cls.__dict__.get("reset_parameters") for cls in RESET_DISABLED}
    originals = {cls: cls.reset_parameters for cls in RESET_DISABLED}
    try:
        yield originals
    finally:
        for cls, own in saved.items():
            if own is None:
                if "reset_parameters" in cls.__dict__:
                    delattr(cls, "reset_parameters")  # it was inherited before
            else:
                cls.reset_parameters = own


def apply_default_init(module, originals):
    """Run PyTorch's default initialisation on the layers a builder left as torch.empty."""
    for m in module.modules():
        for cls in RESET_DISABLED:
            if isinstance(m, cls):
                originals[cls](m)
                break


def timed(fn, phase, acc):
    """Wrap fn so that its wall time is added to acc[phase] (CPU ops are synchronous)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[phase] += time.perf_counter() - start
    return wrapper


@contextlib.contextmanager
def phase_timers(hooks, acc):
    """Temporarily wrap each (owner, attribute, phase) in `hooks` with a timer.

    The wrapped callables never call one another, so no time is counted twice."""
    originals = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in hooks]
    try:
        for (owner, attr, phase), (_, _, fn) in zip(hooks, originals):
            setattr(owner, attr, timed(fn, phase, acc))
        yield
    finally:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)


# --------------------------------------------------------------------------- the references

def arange_labels(batch):
    return torch.arange(batch) % 1000


class Reference:
    """What the benchmark loop needs from a family: the call, its settings, its phases."""

    def __init__(self, name, call, settings, hooks, phase_notes, notes, transformer,
                 labels=arange_labels, labels_text="torch.arange(batch) % 1000",
                 grad_mode="inference_mode"):
        self.name = name            # "var", "hmar", "llamagen" or "mar"
        self.transformer = transformer  # the nn.Module that --dynamic-int8 quantizes
        self.call = call            # call(labels) -> images (B, 3, 256, 256)
        self.settings = settings    # sampling settings, as recorded in the JSON
        self.hooks = hooks          # [(owner, attribute, phase)] for --profile
        self.phase_notes = phase_notes
        self.notes = notes          # substitutes and patches applied to make it run
        self.labels = labels        # labels(batch) -> int64 tensor of class labels
        self.labels_text = labels_text
        # The autograd mode the reference's own sampling script runs in: "inference_mode"
        # (VAR's demo, HMAR's sample.py) or "no_grad" (LlamaGen's sample_c2i.py).
        self.grad_mode = grad_mode


def build_var(repo, depth, seed, overrides, autocast_bf16):
    del autocast_bf16  # VAR's call runs under autocast unchanged (its demo uses autocast)
    notes = []
    require_numpy()
    # var.py imports huggingface_hub only for the VARHF checkpoint-download subclass.
    import_or_substitute("huggingface_hub",
                   lambda: types.SimpleNamespace(PyTorchModelHubMixin=type(
                       "PyTorchModelHubMixin", (), {})),
                   notes, "only used by the VARHF hub subclass, not by sampling")
    import models  # VAR's models/ package, from --repo
    import models.basic_var
    import models.var
    import models.vqvae

    with contextlib.redirect_stdout(sys.stderr), default_init_restored() as originals:
        torch.manual_seed(seed)
        # The arguments of demo_sample.ipynb; build_vae_var runs VAR.init_weights itself.
        vae, var = models.build_vae_var(
            V=4096, Cvae=32, ch=160, share_quant_resi=4, device="cpu",
            patch_nums=PATCH_NUMS, num_classes=1000, depth=depth, shared_aln=False)
    # The VQ-VAE is not reached by init_weights (the demo loads its checkpoint).
    apply_default_init(vae, originals)
    notes.append("VQ-VAE layers given PyTorch's default init (builder leaves them empty); "
                 "transformer initialised by VAR.init_weights (inside build_vae_var)")
    for m in (vae, var):
        m.eval()
        m.requires_grad_(False)

    settings = dict(VAR_SETTINGS)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["g_seed"] = seed

    def call(labels):
        return var.autoregressive_infer_cfg(
            B=labels.numel(), label_B=labels, cfg=settings["cfg"], top_k=settings["top_k"],
            top_p=settings["top_p"], g_seed=seed, more_smooth=settings["more_smooth"])

    hooks = [(models.basic_var.AdaLNSelfAttn, "forward", "backbone"),
             (models.var.VAR, "get_logits", "backbone"),
             (models.var, "sample_with_top_k_top_p_", "sampling"),
             (models.vqvae.VQVAE, "fhat_to_img", "decode")]
    phase_notes = {
        "backbone": "AdaLNSelfAttn.forward (all blocks, incl. KV-cache concat) + "
                    "VAR.get_logits (AdaLN head + vocabulary projection)",
        "sampling": "models.helpers.sample_with_top_k_top_p_ (top-k, top-p, softmax, "
                    "multinomial)",
        "decode": "VQVAE.fhat_to_img (post-quant conv + decoder)",
        "rest": "class/position embeddings, CFG logit mix, codebook lookup, "
                "get_next_autoregressive_input (upsample + phi conv), word_embed",
    }
    return Reference("var", call, settings, hooks, phase_notes, notes, var)


def _literal(text):
    """Value of a scalar in a flat YAML file (the subset HMAR's sample configs use)."""
    text = text.split("#", 1)[0].strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip("'\"")


def hmar_published_settings(repo, depth):
    """HMAR's sampling settings exactly as sample.py gets them, without its dependencies.

    sample.py calls utils.sampling_arg_util.get_args(cfg_folder='sample'): the class
    defaults of `Args` overridden by config/sample/<checkpoint>.yaml. That module needs
    `tap` and `yaml`, so we read the same two files: the Args defaults with `ast`, the flat
    YAML line by line. Returns (settings, the files read)."""
    args_path = os.path.join(repo, "utils", "sampling_arg_util.py")
    with open(args_path) as f:
        tree = ast.parse(f.read(), args_path)
    defaults = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Args":
            for stmt in node.body:
                target = value = None
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    target, value = stmt.targets[0], stmt.value
                elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    target, value = stmt.target, stmt.value
                if isinstance(target, ast.Name):
                    try:
                        defaults[target.id] = ast.literal_eval(value)
                    except ValueError:
                        pass  # computed defaults (None placeholders etc.) are not needed
    yaml_path = os.path.join(repo, "config", "sample", f"hmar-d{depth}.yaml")
    if not os.path.isfile(yaml_path):
        sys.exit(f"error: HMAR publishes no sampling config for depth {depth} ({yaml_path})")
    with open(yaml_path) as f:
        for line in f:
            key, sep, value = line.partition(":")
            key = key.strip()
            if sep and key and not key.startswith("#") and key in defaults:
                defaults[key] = _literal(value)  # get_args only sets keys Args has
    wanted = ("cfg", "top_k", "top_p", "more_smooth", "mask", "mask_schedule",
              "saln", "anorm", "fuse", "pn")
    missing = [k for k in wanted if k not in defaults]
    if missing:
        sys.exit(f"error: could not read {missing} from {args_path} / {yaml_path}")
    settings = {k: defaults[k] for k in wanted}
    return settings, [os.path.relpath(args_path, repo), os.path.relpath(yaml_path, repo)]


def build_hmar(repo, depth, seed, overrides, autocast_bf16):
    notes = []
    require_numpy()
    published, sources = hmar_published_settings(repo, depth)
    patch_nums = tuple(int(p) for p in str(published["pn"]).replace("-", "_").split("_"))
    if patch_nums != PATCH_NUMS:
        sys.exit(f"error: HMAR's default pyramid {patch_nums} is not the 256 px one")

    # The block-sparse attention module imports Triton; HMAR's generate() never calls it
    # (it passes using_block_sparse_attn=False), so without Triton a substitute is enough.
    def triton_substitute():
        def block_sparse_attn_func(*_args, **_kwargs):
            raise NotImplementedError("Triton block-sparse attention is not available")
        return types.SimpleNamespace(block_sparse_attn_func=block_sparse_attn_func)
    import_or_substitute("attn.block_sparse_attn_triton", triton_substitute, notes,
                   "Triton kernel used only in training (block-sparse mask)")
    import attn.block_sparse_attn_interface as bsa

    # BlockSparseAttention.__init__ defaults to device="cuda" for its index tensors, which
    # fails without a GPU. Every SelfAttention builds one (positional block sizes only), but
    # only the training path uses it, so we move those index tensors to the CPU.
    cuda_init = bsa.BlockSparseAttention.__init__

    def cpu_init(self, block_sizes, device="cpu", sparsity_pattern="block_diagonal"):
        cuda_init(self, block_sizes, device="cpu", sparsity_pattern=sparsity_pattern)
    bsa.BlockSparseAttention.__init__ = cpu_init
    notes.append("patched attn.block_sparse_attn_interface.BlockSparseAttention.__init__ to "
                 "device='cpu' (default 'cuda'); its Triton kernel is unused when sampling")

    # hmar.py imports utils.misc for one string helper; that module imports wandb, pytz,
    # torchvision and the training argument parser.
    def misc_substitute():
        def does_not_contain_substrings(main_string, substrings):
            return all(s not in main_string for s in substrings)
        return types.SimpleNamespace(does_not_contain_substrings=does_not_contain_substrings)
    import utils  # HMAR's utils/ package (empty __init__), so the substitute can attach to it
    import_or_substitute("utils.misc", misc_substitute, notes,
                   "hmar.py uses only does_not_contain_substrings from it (parameter freezing)")

    import models  # HMAR's models/ package, from --repo
    import models.hmar
    import models.transformer_blocks
    import models.vqvae

    with contextlib.redirect_stdout(sys.stderr), default_init_restored() as originals:
        torch.manual_seed(seed)
        # The arguments of HMAR's sample.py build_everything().
        vae, hmar = models.build_vae_hmar(
            V=4096, Cvae=32, ch=160, share_quant_resi=4, device="cpu",
            patch_nums=patch_nums, num_classes=1000, depth=depth,
            shared_aln=published["saln"], attn_l2_norm=published["anorm"],
            flash_if_available=published["fuse"], fused_if_available=published["fuse"])
    # build_vae_hmar runs no init at all (sample.py loads checkpoints), so both models keep
    # the builder's empty Linear/Conv weights; give them PyTorch's defaults. The explicitly
    # initialised embeddings (class, position, level, mask) keep HMAR's own init.
    apply_default_init(vae, originals)
    apply_default_init(hmar, originals)
    notes.append("VQ-VAE and HMAR Linear/Conv/LayerNorm layers given PyTorch's default init "
                 "(build_vae_hmar initialises nothing; HMAR's benchmark/inference.py uses "
                 "torch.rand_like instead, which inflates activations)")
    for m in (vae, hmar):
        m.eval()  # sample.py calls hmar.eval(); the VQ-VAE puts itself in eval (test_mode)
        m.requires_grad_(False)

    if autocast_bf16:
        # HMAR's own scripts never use autocast, and generate() is not autocast-safe: in the
        # mask refinement it scatters the float32 mask_embed output into word_embed's output,
        # which autocast makes bfloat16 ("scatter(): Expected self.dtype to be equal to
        # src.dtype"). Casting mask_embed's output to the autocast dtype, as autocast does for
        # Linear outputs, is the smallest change that lets the call run.
        def mask_embed_to_autocast_dtype(_module, _inputs, output):
            if torch.is_autocast_enabled("cpu"):
                return output.to(torch.get_autocast_dtype("cpu"))
            return output
        hmar.mask_embed.register_forward_hook(mask_embed_to_autocast_dtype)
        notes.append("autocast: forward hook casts hmar.mask_embed's output to bfloat16, "
                     "else generate()'s torch.scatter mixes float32 into bfloat16 and fails")

    settings = {k: published[k] for k in ("cfg", "top_k", "top_p", "more_smooth", "mask",
                                          "mask_schedule")}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings.update({"num_samples": 1, "g_seed": seed, "kv_cache": False,
                     "settings_read_from": sources})

    def call(labels):
        # Same keywords as sample.py; kv_cache keeps its default False (HMAR attends within
        # the current scale only, so it needs no cache).
        return hmar.generate(
            labels.numel(), labels, g_seed=seed, num_samples=1, top_k=settings["top_k"],
            top_p=settings["top_p"], cfg=settings["cfg"], more_smooth=settings["more_smooth"],
            mask=settings["mask"], mask_schedule=settings["mask_schedule"])

    hooks = [(models.transformer_blocks.AdaLNSelfAttn, "forward", "backbone"),
             (models.hmar.HMAR, "get_ns_logits", "backbone"),
             (models.hmar.HMAR, "get_mask_logits", "backbone"),
             (models.hmar, "sample_with_top_k_top_p_", "sampling"),
             (models.vqvae.VQVAE, "fhat_to_img", "decode")]
    phase_notes = {
        "backbone": "AdaLNSelfAttn.forward (base, next-scale and mask blocks) + "
                    "get_ns_logits / get_mask_logits (AdaLN heads + vocabulary projections)",
        "sampling": "models.helpers.sample_with_top_k_top_p_ (top-k, top-p, softmax, "
                    "multinomial)",
        "decode": "VQVAE.fhat_to_img (post-quant conv + decoder)",
        "rest": "embeddings, CFG logit mix, mask selection (softmax/gather/argsort), codebook "
                "lookups, get_next_mask_input / get_next_autoregressive_input, word_embed",
    }
    return Reference("hmar", call, settings, hooks, phase_notes, notes, hmar)


def argparse_defaults(tree):
    """The `default=` of every `parser.add_argument("--name", ...)` call in a parsed script, by
    dest ("--name-x" -> "name_x"); defaults that are not literals are left out."""
    defaults = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument" and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("--")):
            for kw in node.keywords:
                if kw.arg == "default":
                    try:
                        defaults[node.args[0].value[2:].replace("-", "_")] = \
                            ast.literal_eval(kw.value)
                    except ValueError:
                        pass
    return defaults


def llamagen_published_settings(repo):
    """sample_c2i.py's argparse defaults and its class labels, read from the file with `ast`.

    Importing the script would import torchvision (save_image) and run its module-level
    settings, so we read the `parser.add_argument("--name", ..., default=...)` calls and the
    `class_labels = [...]` assignment instead. Returns (defaults by dest, labels, file read)."""
    path = os.path.join(repo, "autoregressive", "sample", "sample_c2i.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    defaults, labels = argparse_defaults(tree), None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id == "class_labels"):
            labels = ast.literal_eval(node.value)
    wanted = ("cfg_scale", "cfg_interval", "temperature", "top_k", "top_p", "seed",
              "codebook_size", "codebook_embed_dim", "downsample_size", "num_classes",
              "cls_token_num", "gpt_type", "vq_model")
    missing = [k for k in wanted if k not in defaults]
    if missing or not labels:
        sys.exit(f"error: could not read {missing or 'class_labels'} from {path}")
    return defaults, labels, os.path.relpath(path, repo)


def build_llamagen(repo, size, seed, overrides, autocast_bf16):
    if autocast_bf16:  # main() refuses it first; kept here so no other caller slips past
        sys.exit("error: LlamaGen is measured in float32 only")
    notes = []
    published, class_labels, source = llamagen_published_settings(repo)
    if published["gpt_type"] != "c2i":
        sys.exit(f"error: {source} defaults to --gpt-type {published['gpt_type']}, not c2i")
    # LlamaGen's own packages, from --repo (autoregressive/, tokenizer/, utils/).
    import autoregressive.models.generate as llamagen_generate
    import autoregressive.models.gpt as llamagen_gpt
    import tokenizer.tokenizer_image.vq_model as llamagen_vq

    gpt_name = f"GPT-{size.upper()}"
    if gpt_name not in llamagen_gpt.GPT_models:
        sys.exit(f"error: LlamaGen has no {gpt_name} (GPT_models: "
                 f"{', '.join(llamagen_gpt.GPT_models)})")
    seed = published["seed"] if seed is None else seed
    latent = LLAMAGEN_IMAGE_SIZE // published["downsample_size"]
    with contextlib.redirect_stdout(sys.stderr):
        torch.manual_seed(seed)  # as sample_c2i.py does before building
        # The arguments of sample_c2i.py's main(), at 256 px.
        vq_model = llamagen_vq.VQ_models[published["vq_model"]](
            codebook_size=published["codebook_size"],
            codebook_embed_dim=published["codebook_embed_dim"])
        gpt_model = llamagen_gpt.GPT_models[gpt_name](
            vocab_size=published["codebook_size"], block_size=latent ** 2,
            num_classes=published["num_classes"], cls_token_num=published["cls_token_num"],
            model_type="c2i").to(dtype=torch.float32)
    # Transformer.initialize_weights draws Linear/Embedding weights from N(0, 0.02) and then
    # zeroes the vocabulary projection (a training-start choice): every logit would be 0 and
    # every draw uniform. Give the projection the same N(0, initializer_range) as the other
    # layers; the cost of a call does not depend on it (top-k sorts the full vocabulary).
    torch.nn.init.normal_(gpt_model.output.weight, mean=0.0,
                          std=gpt_model.config.initializer_range)
    notes.append(f"{gpt_name} initialised by Transformer.initialize_weights (N(0, "
                 f"{gpt_model.config.initializer_range})), its zeroed output projection "
                 f"redrawn from the same normal; {published['vq_model']} keeps its "
                 "constructors' init (sample_c2i.py's reset_parameters no-ops are not "
                 "imported)")
    for m in (vq_model, gpt_model):
        m.eval()
        m.requires_grad_(False)

    settings = {k: published[k] for k in ("cfg_scale", "cfg_interval", "temperature", "top_k",
                                          "top_p")}
    settings.update({"cfg_scale" if k == "cfg" else k: v for k, v in overrides.items()
                     if v is not None})
    settings.update({"sample_logits": True, "kv_cache": True, "gpt_model": gpt_name,
                     "vq_model": published["vq_model"], "image_size": LLAMAGEN_IMAGE_SIZE,
                     "downsample_size": published["downsample_size"],
                     "codebook_size": published["codebook_size"],
                     "codebook_embed_dim": published["codebook_embed_dim"],
                     "cls_token_num": published["cls_token_num"], "dtype": "float32",
                     "seed": seed, "settings_read_from": [source]})
    notes.append(f"{source} defaults to --image-size 384 and --precision bf16; this run uses "
                 f"{LLAMAGEN_IMAGE_SIZE} px ({latent}x{latent} tokens) and float32, as "
                 "Tessera's llamagen presets")
    notes.append("torch.manual_seed(seed) at the start of every call (sample_c2i.py seeds "
                 "once per process), so that each call draws the same tokens")

    def call(labels):
        torch.manual_seed(seed)
        index_sample = llamagen_generate.generate(
            gpt_model, labels, latent ** 2, cfg_scale=settings["cfg_scale"],
            cfg_interval=settings["cfg_interval"], temperature=settings["temperature"],
            top_k=settings["top_k"], top_p=settings["top_p"], sample_logits=True)
        qzshape = [labels.numel(), settings["codebook_embed_dim"], latent, latent]
        return vq_model.decode_code(index_sample, qzshape)

    def labels_of(batch):
        return torch.tensor([class_labels[i % len(class_labels)] for i in range(batch)])

    # prefill() and decode_one_token() call `sample` through the module's globals, so
    # replacing the module attribute times every draw.
    hooks = [(llamagen_gpt.Transformer, "forward", "backbone"),
             (llamagen_generate, "sample", "sampling"),
             (llamagen_vq.VQModel, "decode", "decode")]
    phase_notes = {
        "backbone": "Transformer.forward (class/token embedding, all blocks incl. the KV-cache "
                    "update, final RMSNorm, vocabulary projection)",
        "sampling": "autoregressive.models.generate.sample (temperature, top-k/top-p "
                    "filtering, softmax, multinomial)",
        "decode": "VQModel.decode (post-quant conv + decoder)",
        "rest": "setup_caches (KV caches, causal mask, RoPE table: every call), CFG logit mix, "
                "token bookkeeping, VQModel.decode_code's codebook lookup",
    }
    return Reference("llamagen", call, settings, hooks, phase_notes, notes, gpt_model,
                     labels=labels_of,
                     labels_text=f"sample_c2i.py's class_labels {class_labels}, cycled to "
                                 "the batch",
                     grad_mode="no_grad")


def mar_published_settings(repo):
    """main_mar.py's argparse defaults, read with `ast` (importing it would import torchvision's
    datasets and the training engine). Returns (defaults by dest, file read)."""
    path = os.path.join(repo, "main_mar.py")
    with open(path) as f:
        defaults = argparse_defaults(ast.parse(f.read(), path))
    wanted = ("img_size", "vae_path", "vae_embed_dim", "vae_stride", "patch_size", "num_iter",
              "cfg_schedule", "temperature", "mask_ratio_min", "label_drop_prob", "class_num",
              "attn_dropout", "proj_dropout", "buffer_size", "diffloss_d", "diffloss_w",
              "num_sampling_steps", "diffusion_batch_mul", "seed")
    missing = [k for k in wanted if k not in defaults]
    if missing:
        sys.exit(f"error: could not read {missing} from {path}")
    return defaults, os.path.relpath(path, repo)


def build_mar(repo, size, seed, overrides, autocast_bf16):
    if autocast_bf16:  # main() refuses it first
        sys.exit("error: MAR is measured in float32 only")
    notes = []
    published, source = mar_published_settings(repo)
    model_name, readme_cfg, diffloss_d, diffloss_w = MAR_SIZES[size]
    # MAR's sampler creates its tensors with .cuda() (sample_tokens' mask, tokens and
    # mask_len; DiffLoss.sample's noise). On the CPU that is the identity.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    notes.append("torch.Tensor.cuda patched to return the tensor itself: MAR's sample_tokens and "
                 "DiffLoss.sample move their tensors with .cuda()")
    import numpy as np
    import models.mar as mar_models
    import models.diffloss as mar_diffloss
    from models.vae import AutoencoderKL

    seed = published["seed"] if seed is None else seed
    with contextlib.redirect_stdout(sys.stderr):
        torch.manual_seed(seed)
        np.random.seed(seed)
        # main_mar.py's construction (vae_stride, patch_size, buffer, DiffLoss sizes, steps).
        vae = AutoencoderKL(embed_dim=published["vae_embed_dim"], ch_mult=(1, 1, 2, 2, 4),
                            ckpt_path=None)
        model = mar_models.__dict__[model_name](
            img_size=published["img_size"], vae_stride=published["vae_stride"],
            patch_size=published["patch_size"], vae_embed_dim=published["vae_embed_dim"],
            mask_ratio_min=published["mask_ratio_min"],
            label_drop_prob=published["label_drop_prob"], class_num=published["class_num"],
            attn_dropout=published["attn_dropout"], proj_dropout=published["proj_dropout"],
            buffer_size=published["buffer_size"], diffloss_d=diffloss_d, diffloss_w=diffloss_w,
            num_sampling_steps=published["num_sampling_steps"],
            diffusion_batch_mul=published["diffusion_batch_mul"])
    notes.append(f"{model_name} initialised by MAR.initialize_weights, KL-16 by its "
                 "constructors (no checkpoint: ckpt_path=None)")
    for m in (vae, model):
        m.eval()
        m.requires_grad_(False)

    settings = {"num_iter": published["num_iter"], "cfg": readme_cfg,
                "cfg_schedule": "linear", "temperature": published["temperature"]}
    settings.update({k: v for k, v in overrides.items() if k == "cfg" and v is not None})
    settings.update({"model": model_name, "img_size": published["img_size"],
                     "vae_stride": published["vae_stride"], "patch_size": published["patch_size"],
                     "buffer_size": published["buffer_size"],
                     "diffloss_d": diffloss_d, "diffloss_w": diffloss_w,
                     "num_sampling_steps": published["num_sampling_steps"], "dtype": "float32",
                     "seed": seed, "settings_read_from": [source, "README.md (cfg)"]})
    notes.append(f"settings: {source}'s defaults (num_iter {published['num_iter']}, "
                 f"{published['num_sampling_steps']} diffusion steps) with the README's "
                 f"DiffLoss size for {model_name} ({diffloss_d} blocks of width {diffloss_w}) and "
                 f"its evaluation guidance (cfg {readme_cfg}, linear); the README evaluates with "
                 "--num_iter 256")
    notes.append("torch.manual_seed(seed) and np.random.seed(seed) at the start of every call "
                 "(main_mar.py seeds once per process), so that each call draws the same images")

    def call(labels):
        torch.manual_seed(seed)
        np.random.seed(seed)
        tokens = model.sample_tokens(bsz=labels.numel(), num_iter=settings["num_iter"],
                                     cfg=settings["cfg"], cfg_schedule=settings["cfg_schedule"],
                                     labels=labels, temperature=settings["temperature"])
        return vae.decode(tokens / MAR_VAE_SCALE)

    hooks = [(mar_models.MAR, "forward_mae_encoder", "backbone"),
             (mar_models.MAR, "forward_mae_decoder", "backbone"),
             (mar_diffloss.DiffLoss, "sample", "sampling"),
             (AutoencoderKL, "decode", "decode")]
    phase_notes = {
        "backbone": "MAR.forward_mae_encoder + forward_mae_decoder (both ViT stacks, their "
                    "embeddings, norms and position terms)",
        "sampling": "DiffLoss.sample (the whole diffusion loop of the DiffLoss MLP per MAR step)",
        "decode": "AutoencoderKL.decode (post-quant conv + decoder)",
        "rest": "orders, mask_by_order, class embeddings, CFG batch bookkeeping, unpatchify",
    }
    return Reference("mar", call, settings, hooks, phase_notes, notes, model,
                     labels=lambda batch: torch.arange(batch) % published["class_num"],
                     labels_text="torch.arange(batch) (main_mar.py's evaluate: "
                                 "np.arange(0, class_num), in order)",
                     grad_mode="no_grad")


def quantize_dynamic_int8(ref):
    """PyTorch's dynamic int8 on the reference's transformer: every nn.Linear the model calls
    as a module becomes a DynamicQuantizedLinear (int8 weights per output channel, activations
    quantized per call with one scale per tensor). The attention's mat_qkv stays float32: both
    references read mat_qkv.weight directly (F.linear with a concatenated bias), which a
    quantized module does not have."""
    import warnings
    from torch.ao import quantization
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's notice
        spec = {name: quantization.per_channel_dynamic_qconfig
                for name, module in ref.transformer.named_modules()
                if isinstance(module, torch.nn.Linear) and not name.endswith("mat_qkv")}
        quantization.quantize_dynamic(ref.transformer, qconfig_spec=spec, dtype=torch.qint8,
                                      inplace=True)
    ref.notes.append(f"dynamic int8: {len(spec)} nn.Linear layers quantized by "
                     "torch.ao.quantization.quantize_dynamic (per-channel weights); the "
                     "attention's mat_qkv layers stay float32 (read as .weight by the reference)")


# --------------------------------------------------------------------------- measurement

def run_batch(ref, batch, args):
    labels = ref.labels(batch)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast_bf16
                else contextlib.nullcontext())
    acc = {"backbone": 0.0, "sampling": 0.0, "decode": 0.0}
    timers = phase_timers(ref.hooks, acc) if args.profile else contextlib.nullcontext()

    seconds, phases, output = [], [], None
    hwm_reset = reset_peak_rss()  # before the warm-up: its first call allocates the most
    # The autograd mode of the reference's own sampling script (see Reference.grad_mode).
    grad_mode = torch.inference_mode() if ref.grad_mode == "inference_mode" else torch.no_grad()
    with timers, grad_mode, autocast:
        for _ in range(args.warmup):
            ref.call(labels)
        for _ in range(args.repeat):
            for key in acc:
                acc[key] = 0.0
            start = time.perf_counter()
            output = ref.call(labels)
            elapsed = time.perf_counter() - start
            seconds.append(elapsed)
            if args.profile:
                split = dict(acc)
                split["rest"] = elapsed - sum(acc.values())
                split["total"] = elapsed
                phases.append(split)
    peak = peak_rss_bytes()

    median = statistics.median(seconds)
    result = {
        "batch": batch,
        "seconds": seconds,
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "images_per_s": batch / median,
        "peak_rss_bytes": peak,
        "peak_rss_method": "clear_refs+VmHWM" if hwm_reset
                           else "getrusage/VmHWM without reset (process-lifetime peak)",
        "output": {"shape": list(output.shape), "dtype": str(output.dtype).replace("torch.", ""),
                   "finite": bool(torch.isfinite(output).all())},
        # Mean over the timed calls; "total" is the mean call time, rest = total - the others.
        "phases_s": ({k: statistics.fmean(p[k] for p in phases) for k in phases[0]}
                     if phases else None),
    }
    return result


def print_report(report):
    size = (f"model {report['model']}" if report.get("model")
            else f"depth {report['depth']}")
    print(f"reference {report['reference']} @ {(report['commit'] or 'unknown')[:10]}  "
          f"{size}  torch {report['torch']}  threads {report['threads']}  "
          f"autocast_bf16 {report['autocast_bf16']}")
    cpu = report["cpu"]
    print(f"cpu {cpu['name']}  [{' '.join(cpu['flags'])}]")
    shown = {k: v for k, v in report["settings"].items() if k != "settings_read_from"}
    print("settings " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    for note in report["notes"]:
        print(f"note: {note}")
    print()
    header = (f"{'batch':>5} {'median_s':>10} {'min_s':>10} {'max_s':>10} {'images/s':>10} "
              f"{'peak_rss_MiB':>13}  output")
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        out = r["output"]
        print(f"{r['batch']:>5} {r['median_s']:>10.3f} {r['min_s']:>10.3f} {r['max_s']:>10.3f} "
              f"{r['images_per_s']:>10.3f} {r['peak_rss_bytes'] / 2**20:>13.1f}  "
              f"{'x'.join(map(str, out['shape']))} {out['dtype']}"
              f"{'' if out['finite'] else ' NON-FINITE'}")
    if any(r["peak_rss_method"] != "clear_refs+VmHWM" for r in report["results"]):
        print("peak RSS: /proc/self/clear_refs could not be written, so the peak is the "
              "process-lifetime high-water mark, not per batch")
    profiled = [r for r in report["results"] if r["phases_s"]]
    if profiled:
        print("\nphases (mean seconds per timed call; timers add a little overhead):")
        print(f"{'batch':>5} " + " ".join(f"{k:>18}" for k in
                                          ("backbone", "sampling", "decode", "rest", "total")))
        for r in profiled:
            p = r["phases_s"]
            cells = [f"{p[k]:8.3f} ({100 * p[k] / p['total']:5.1f}%)"
                     for k in ("backbone", "sampling", "decode", "rest")]
            print(f"{r['batch']:>5} " + " ".join(f"{c:>18}" for c in cells)
                  + f" {p['total']:>18.3f}")
        for phase, what in report["phase_definitions"].items():
            print(f"  {phase}: {what}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--family", required=True, choices=("var", "hmar", "llamagen", "mar"))
    parser.add_argument("--repo", required=True,
                        help="git clone of the reference (outside this repository)")
    parser.add_argument("--commit", metavar="SHA",
                        help="the reference's commit, recorded when --repo is not a git clone "
                             "(else read from <repo>/COMMIT if there is one)")
    parser.add_argument("--depth", type=int, default=None,
                        help="VAR/HMAR transformer depth (default 16)")
    parser.add_argument("--size", choices=sorted(set(LLAMAGEN_SIZES) | set(MAR_SIZES)),
                        default=None,
                        help="LlamaGen GPT size: GPT-<SIZE> of its GPT_models; MAR: b, l or h "
                             "(mar_base, mar_large, mar_huge); default b")
    parser.add_argument("--batch", action="append", metavar="N[,N...]",
                        help="batch size(s); repeatable or comma-separated (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per batch size")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per batch size")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"weight-init and sampling seed (default: the reference's, "
                             f"VAR {VAR_SEED}, HMAR {HMAR_SEED}, LlamaGen sample_c2i.py's "
                             f"--seed default)")
    parser.add_argument("--autocast-bf16", action="store_true",
                        help='run the call under torch.autocast("cpu", dtype=torch.bfloat16)')
    parser.add_argument("--dynamic-int8", action="store_true",
                        help="quantize the transformer's nn.Linear layers with PyTorch's own "
                             "dynamic int8 (torch.ao.quantization.quantize_dynamic, per-channel "
                             "weights), the reference's counterpart of Tessera's int8")
    parser.add_argument("--profile", action="store_true",
                        help="split each call into backbone / sampling / decode / rest")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--cfg", type=float, default=None,
                        help="override the published guidance scale")
    parser.add_argument("--top-k", type=int, default=None, help="override the published top-k")
    parser.add_argument("--top-p", type=float, default=None, help="override the published top-p")
    args = parser.parse_args()

    try:
        batches = parse_batches(args.batch)
    except (ValueError, argparse.ArgumentTypeError) as err:
        parser.error(f"--batch: {err}")
    if args.family in ("llamagen", "mar"):
        name = {"llamagen": "LlamaGen", "mar": "MAR"}[args.family]
        if args.depth is not None:
            parser.error(f"--depth is for VAR/HMAR; {name}'s model is chosen with --size")
        if args.autocast_bf16 or args.dynamic_int8:
            parser.error(f"{name} is measured in float32 only: --autocast-bf16 and "
                         f"--dynamic-int8 are not supported for --family {args.family}")
        args.size = args.size or "b"
        sizes = LLAMAGEN_SIZES if args.family == "llamagen" else MAR_SIZES
        if args.size not in sizes:
            parser.error(f"--size {args.size}: {name} has {', '.join(sizes)}")
    else:
        if args.size is not None:
            parser.error("--size is for LlamaGen; VAR/HMAR are chosen with --depth")
        args.depth = 16 if args.depth is None else args.depth
    if args.warmup < 0 or args.repeat < 1 or args.threads < 1 or (args.depth or 1) < 1:
        parser.error("--warmup must be >= 0; --repeat, --threads and --depth must be >= 1")
    repo = os.path.abspath(args.repo)
    entry = {"var": "models/var.py", "hmar": "models/hmar.py",
             "llamagen": "autoregressive/models/generate.py",
             "mar": "models/mar.py"}[args.family]
    if not os.path.isdir(repo):
        parser.error(f"--repo {args.repo}: no such directory")
    if not os.path.isfile(os.path.join(repo, entry)):
        parser.error(f"--repo {args.repo}: no {entry}; is this a clone of the "
                     f"{args.family.upper()} reference?")

    torch.set_num_threads(args.threads)
    # The references import their own top-level packages (models, utils, dist, attn;
    # LlamaGen's autoregressive, tokenizer, utils), so the clone goes first on the path; only
    # one family is loaded per process.
    sys.path.insert(0, repo)
    overrides = {"cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p}
    if args.family == "llamagen":
        # Its default seed is sample_c2i.py's, read with its other settings.
        ref = build_llamagen(repo, args.size, args.seed, overrides, args.autocast_bf16)
    elif args.family == "mar":
        ref = build_mar(repo, args.size, args.seed, overrides, args.autocast_bf16)
    else:
        seed = args.seed if args.seed is not None else (VAR_SEED if args.family == "var"
                                                        else HMAR_SEED)
        build = build_var if args.family == "var" else build_hmar
        ref = build(repo, args.depth, seed, overrides, args.autocast_bf16)
    commit, commit_source = reference_commit(repo, args.commit)
    if args.dynamic_int8:
        quantize_dynamic_int8(ref)

    results = []
    for batch in batches:
        results.append(run_batch(ref, batch, args))
        print(f"[batch {batch}: median {results[-1]['median_s']:.3f} s]", file=sys.stderr,
              flush=True)

    report = {
        "reference": ref.name,
        "commit": commit,
        "commit_source": commit_source,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "autocast_bf16": bool(args.autocast_bf16),
        "dynamic_int8": bool(args.dynamic_int8),
        "cpu": cpu_info(),
        "depth": args.depth,
        # LlamaGen's GPT-<SIZE>, MAR's mar_<size>; None for VAR/HMAR
        "model": ref.settings.get("gpt_model") or ref.settings.get("model"),
        "warmup": args.warmup,
        "repeat": args.repeat,
        "labels": ref.labels_text,
        "grad_mode": ref.grad_mode,
        "settings": ref.settings,
        "notes": ref.notes,
        "phase_definitions": ref.phase_notes if args.profile else None,
        "results": results,
    }
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
