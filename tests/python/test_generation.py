"""Generators and tokenizers from Python against the `tessera` command and the VAR reference
fixture (../shared/parity/var-tiny, made by VAR's own code)."""

import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import tessera
from conftest import SOURCE_DIR, parity_dir, require

MODELS = sorted(p.name for p in (SOURCE_DIR / "models").glob("*_fashion_mnist.safetensors") if not p.name.startswith("classifier"))


@pytest.mark.parametrize("model", MODELS)
def test_python_samples_equal_tessera_sample(model, cli, tmp_path):
    """Same seed, same options, same thread count: the same tokens and the same PNG bytes."""
    path = SOURCE_DIR / "models" / model
    sampling = '{"head": {"temperature": 0.9}}'
    subprocess.run(
        [cli, "sample", "--model", path, "--per-class", "1", "--seed", "11", "--threads", "2",
         "--sampling", sampling, "--out", tmp_path / "cli.png", "--save-tokens", tmp_path / "cli.safetensors"],
        check=True, capture_output=True,
    )
    torch.set_num_threads(2)
    generator = tessera.load_generator(path)
    labels = torch.arange(generator.num_classes)  # --per-class 1: one row per class, in order
    images, tokens = generator.sample(labels, seed=11, head={"temperature": 0.9}, return_tokens=True)
    assert images.dtype == torch.uint8
    assert images.shape == (10, generator.image_channels, generator.image_size, generator.image_size)
    saved = load_file(tmp_path / "cli.safetensors")
    assert torch.equal(saved["labels"], labels)
    assert len(tokens) == len([k for k in saved if k.startswith("scale_")])
    for s, scale in enumerate(tokens):
        assert torch.equal(scale, saved[f"scale_{s}"]), f"scale {s}"
    # The command's grid: one row per class, 2-pixel padding of grey 96, small images doubled.
    tessera.write_image_grid(tmp_path / "py.png", images, columns=1, padding=2, pad_value=96, upscale=2)
    assert (tmp_path / "py.png").read_bytes() == (tmp_path / "cli.png").read_bytes()
    # Decoding the returned tokens again gives the same images.
    assert torch.equal(generator.decode(tokens), images)


def test_sample_splits_into_batches_without_changing_samples():
    generator = tessera.load_generator(SOURCE_DIR / "models" / "maskgit_fashion_mnist.safetensors")
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    whole = generator.sample(labels, seed=2)
    first = generator.sample(labels[:4], seed=2)
    rest = generator.sample(labels[4:], seed=2, first_index=4)
    assert torch.equal(torch.cat([first, rest]), whole)


def test_tokenizers_decode_as_the_generator_does():
    generator = tessera.load_generator(SOURCE_DIR / "models" / "maskgit_fashion_mnist.safetensors")
    images, tokens = generator.sample(torch.tensor([0, 7]), seed=1, return_tokens=True)
    decoded = generator.tokenizer.decode(tokens, generator.image_size)
    assert decoded.shape == (2, 1, generator.image_size, generator.image_size)
    assert decoded.dtype == torch.float32
    # sample() decodes on every thread (Note [Thread-invariant decoding]): another summation
    # order, so its pixels may differ by one grey level.
    pixels = ((decoded.clamp(-1, 1) + 1) * 127.5).round()
    assert (pixels - images.double()).abs().max() <= 1
    # The shipped MaskGIT was trained on the shipped VQ-VAE, whose file keeps float32 weights
    # (the generator's copy is stored in bfloat16): the same images to bf16 rounding.
    tokenizer = tessera.load_tokenizer(SOURCE_DIR / "models" / "tokenizers" / "vq_vae_fashion_mnist.safetensors")
    assert tokenizer.config == generator.tokenizer.config
    from_file = tokenizer.decode(tokens, generator.image_size)
    assert ((from_file - decoded).norm() / decoded.norm()).item() < 1e-2


def open_var_fixture():
    folder = parity_dir("var-tiny")
    require(all((folder / f).is_file() for f in ("io.safetensors", "var.safetensors", "vqvae.safetensors")),
            f"the VAR fixture in {folder}")
    with safe_open(folder / "io.safetensors", "pt") as f:
        metadata = f.metadata()
    io = load_file(folder / "io.safetensors")
    return metadata, io, load_file(folder / "var.safetensors"), load_file(folder / "vqvae.safetensors")


def test_var_fixture_from_python_dicts_reproduces_the_reference_tokens_and_image():
    metadata, io, transformer, vae = open_var_fixture()
    generator = tessera.load_preset(architecture=metadata, transformer=transformer, vae=vae)
    labels = io["label"].to(torch.int64)
    images, tokens = generator.sample(labels, seed=int(metadata["sample_seed"]), reference_seeding=True,
                                      return_tokens=True)
    scales = sorted(k for k in io if k.startswith("sampled_idx."))
    assert len(tokens) == len(scales)
    for s in range(len(scales)):
        assert torch.equal(tokens[s], io[f"sampled_idx.{s}"].to(torch.int64)), f"scale {s}"
    # VAR's image in [0, 1], as uint8 the way Tessera maps [-1, 1]: within one grey level.
    reference = (io["sample_image"].double() * 255).round().clamp(0, 255)
    assert (images.double() - reference).abs().max() <= 1


def test_var_fixture_from_python_dicts_reproduces_the_reference_logits():
    metadata, io, transformer, vae = open_var_fixture()
    generator = tessera.load_preset(architecture=metadata, transformer=transformer, vae=vae)
    logits = generator.teacher_forcing_logits(io["var_input"], io["label"].to(torch.int64))
    reference = io["logits"]
    assert logits.shape == reference.shape
    assert ((logits.double() - reference.double()).norm() / reference.double().norm()).item() < 1e-4


def test_var_fixture_tokenizer_encodes_and_decodes_as_the_reference():
    metadata, io, transformer, vae = open_var_fixture()
    tokenizer = tessera.load_preset(architecture=metadata, transformer=transformer, vae=vae).tokenizer
    ids = tokenizer.encode(io["image"])
    scales = sorted(k for k in io if k.startswith("idx."))
    assert len(ids) == len(scales)
    for s in range(len(scales)):
        assert torch.equal(ids[s], io[f"idx.{s}"].to(torch.int64)), f"scale {s}"
    recon = tokenizer.decode(ids, io["image"].shape[-2], io["image"].shape[-1])
    error = ((recon.double() - io["recon"].double()).norm() / io["recon"].double().norm()).item()
    assert error < 1e-4


def test_llamagen_fixture_from_python_dicts_reproduces_the_reference_tokens():
    """LlamaGen's GPT and VQ state dicts with the fixture's metadata as the architecture: reference
    seeding by the exponential race (torch 2.x) gives generate()'s tokens; the inverse CDF other
    tokens; the tokenizer encodes the fixture's images to its codes."""
    folder = parity_dir("llamagen-tiny")
    require(all((folder / f).is_file() for f in ("io.safetensors", "model.safetensors", "tokenizer.safetensors")),
            f"the LlamaGen fixture in {folder}")
    with safe_open(folder / "io.safetensors", "pt") as f:
        metadata = f.metadata()
    io = load_file(folder / "io.safetensors")
    generator = tessera.load_preset(architecture=metadata, transformer=load_file(folder / "model.safetensors"),
                                    vae=load_file(folder / "tokenizer.safetensors"))
    labels = io["label"].to(torch.int64)
    seed = int(metadata["sample_seed"])
    _, tokens = generator.sample(labels, seed=seed, reference_seeding=True,
                                 reference_multinomial="exponential_race", return_tokens=True)
    assert torch.equal(tokens[0], io["sampled_tokens"].to(torch.int64))
    _, other = generator.sample(labels, seed=seed, reference_seeding=True, return_tokens=True)
    assert not torch.equal(other[0], io["sampled_tokens"].to(torch.int64))
    assert torch.equal(generator.tokenizer.encode(io["image"])[0], io["codes"].to(torch.int64))
    with pytest.raises(tessera.Error, match="exponential_race"):
        generator.sample(labels, reference_seeding=True, reference_multinomial="gumbel")


def test_mar_fixture_from_python_dicts_reproduces_the_reference_tokens():
    """MAR's state dict and KL-16 VAE with the fixture's metadata: the architecture from the
    tensors, reference seeding (numpy's orders, torch's stream) gives sample_tokens' tokens within
    1e-4; a missing tensor is named."""
    folder = parity_dir("mar-tiny")
    require(all((folder / f).is_file() for f in ("io.safetensors", "model.safetensors", "vae.safetensors")),
            f"the MAR fixture in {folder}")
    with safe_open(folder / "io.safetensors", "pt") as f:
        metadata = f.metadata()
    io = load_file(folder / "io.safetensors")
    transformer, vae = load_file(folder / "model.safetensors"), load_file(folder / "vae.safetensors")
    generator = tessera.load_preset(architecture=metadata, transformer=transformer, vae=vae)
    labels = io["sample.labels"].to(torch.int64)
    _, tokens = generator.sample(labels, seed=int(metadata["sample_seed"]), reference_seeding=True,
                                 return_tokens=True)
    reference = io["sample.tokens"].flatten(2).transpose(1, 2)  # MAR's patchify: [B, h·w, C]
    assert ((tokens[0] - reference).norm() / reference.norm()).item() < 1e-4
    broken = dict(transformer)
    del broken["fake_latent"]
    with pytest.raises(tessera.Error, match="fake_latent"):
        tessera.load_preset(architecture=metadata, transformer=broken, vae=vae)


def test_a_wrong_state_dict_is_an_error_naming_the_keys():
    metadata, _, transformer, vae = open_var_fixture()
    broken = dict(transformer)
    del broken["word_embed.weight"]
    with pytest.raises(tessera.Error, match="word_embed.weight"):
        tessera.load_preset(architecture=metadata, transformer=broken, vae=vae)
