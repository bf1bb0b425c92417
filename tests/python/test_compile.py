"""tessera.attention under torch.compile (inductor, CPU): one operator in one graph, no graph break,
the same values as eager in the forward and the backward."""

import torch
import torch._dynamo

import tessera

SEGMENTS = tessera.pyramid([1, 2, 3, 4, 5])  # 55 tokens


class Block(torch.nn.Module):
    """A VAR-style self-attention block: one qkv projection, masked attention, output projection."""

    def __init__(self, width=128, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.mask = tessera.BlockMask.block_causal(SEGMENTS)

    def forward(self, x):
        b, length, width = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = tessera.attention(q, k, v, self.mask)
        return self.proj(out.transpose(1, 2).reshape(b, length, width))


def test_the_operator_is_not_a_graph_break():
    torch.manual_seed(0)
    block = Block()
    x = torch.randn(2, sum(SEGMENTS), 128)
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_forward_and_backward_equal_eager():
    torch.manual_seed(0)
    torch._dynamo.reset()
    block = Block()
    compiled = torch.compile(block, backend="inductor", fullgraph=True)
    x = torch.randn(2, sum(SEGMENTS), 128, requires_grad=True)
    eager_out = block(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in block.parameters()] + [x.grad.clone()]
    block.zero_grad()
    x.grad = None
    compiled_out = compiled(x)
    compiled_out.square().sum().backward()
    compiled_grads = [p.grad for p in block.parameters()] + [x.grad]
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
