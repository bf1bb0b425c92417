#!/usr/bin/env python3
"""Training with tessera.attention in place of VAR's masked SDPA call.

VAR's blocks call F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias) with a dense
block-causal mask over the token pyramid; that computes every masked-out score and throws it away.
tessera.attention takes the mask as a BlockMask and skips the tiles no query sees. This script
trains a small VAR-shaped next-scale transformer on random targets for a few steps with each,
from the same initial weights, and prints both loss curves, which agree to float32 rounding.

    PYTHONPATH=build/python python examples/python/var_block_training.py --steps 20
"""

import argparse
import copy

import torch
import torch.nn.functional as F

import tessera

PATCH_NUMS = (1, 2, 3, 4, 5, 6)  # a small pyramid: 91 tokens


class SelfAttention(torch.nn.Module):
    def __init__(self, width, heads, attend):
        super().__init__()
        self.heads, self.attend = heads, attend
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x):
        b, length, width = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, length, width))


class NextScaleTransformer(torch.nn.Module):
    def __init__(self, attend, width=256, heads=4, depth=4, vocab=512):
        super().__init__()
        length = sum(p * p for p in PATCH_NUMS)
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Parameter(torch.randn(1, length, width) * 0.02)
        self.blocks = torch.nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(torch.nn.ModuleDict({
                "norm1": torch.nn.LayerNorm(width), "attn": SelfAttention(width, heads, attend),
                "norm2": torch.nn.LayerNorm(width), "mlp": torch.nn.Sequential(
                    torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)),
            }))
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, tokens):
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = x + block["attn"](block["norm1"](x))
            x = x + block["mlp"](block["norm2"](x))
        return self.head(x)


def train(model, inputs, targets, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    segments = tessera.pyramid(PATCH_NUMS)
    mask = tessera.BlockMask.block_causal(segments)  # VAR's training mask
    dense = mask.to_dense()  # what VAR builds as attn_bias, as a boolean mask

    torch.manual_seed(0)
    with_sdpa = NextScaleTransformer(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=dense))
    with_tessera = copy.deepcopy(with_sdpa)
    for block in with_tessera.blocks:
        block["attn"].attend = lambda q, k, v: tessera.attention(q, k, v, mask)

    inputs = torch.randint(0, 512, (4, sum(segments)))
    targets = torch.randint(0, 512, (4, sum(segments)))
    sdpa_losses = train(with_sdpa, inputs, targets, args.steps)
    tessera_losses = train(with_tessera, inputs, targets, args.steps)
    print(f"{mask}")
    print("step  loss (SDPA)  loss (tessera.attention)")
    for step, (a, b) in enumerate(zip(sdpa_losses, tessera_losses)):
        print(f"{step:4d}  {a:11.5f}  {b:11.5f}")
    worst = max(abs(a - b) / a for a, b in zip(sdpa_losses, tessera_losses))
    print(f"largest relative difference of the losses: {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit("the two runs diverged")


if __name__ == "__main__":
    main()
