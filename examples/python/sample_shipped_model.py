#!/usr/bin/env python3
"""Sampling a shipped model from Python: a class-conditional grid, as `tessera sample` draws it.

    PYTHONPATH=build/python python examples/python/sample_shipped_model.py \
        models/var_fashion_mnist.safetensors out/var_grid.png
"""

import argparse

import torch

import tessera


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a generator file (models/*.safetensors)")
    parser.add_argument("out", help="PNG grid to write")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = tessera.load_generator(args.model)
    labels = torch.arange(generator.num_classes).repeat_interleave(args.per_class)
    images, tokens = generator.sample(labels, seed=args.seed, return_tokens=True)
    print(f"{generator}: {images.shape[0]} images {list(images.shape[1:])} uint8, "
          f"{len(tokens)} token scale(s) {[list(t.shape) for t in tokens]}")
    tessera.write_image_grid(args.out, images, columns=args.per_class, pad_value=96, upscale=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
