# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""A small causal transformer over the codes in raster order, registered as the prior
"transformer": minGPT's blocks, with the class as the start token.

Chapter 8 (`notebooks/08_prior.ipynb`) checks by autograd that it is causal and trains it.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae_lite.code_dataset import check_codes, check_labels
from vqvae_lite.prior_registry import check_sizes, register_prior


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions <= t only."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # -> 3 x (B, heads, T, C/heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))  # (B, heads, T, c) -> (B, T, C)


class TransformerBlock(nn.Module):
    """minGPT's block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_prior("transformer")
class CodeTransformer(nn.Module):
    """A small causal transformer over the codes in raster order. The class is the start
    token, so position t predicts code t from the class and codes 0..t-1."""

    def __init__(
        self,
        num_codes: int,
        num_classes: int,
        grid: tuple[int, int] = (8, 8),
        dim: int = 128,
        layers: int = 4,
        heads: int = 4,
    ):
        super().__init__()
        check_sizes("CodeTransformer", dim=dim, layers=layers, heads=heads)
        if dim % heads:
            raise ValueError(f"dim must be a multiple of heads, got dim {dim} and {heads} heads")
        self.num_codes, self.num_classes, self.grid = num_codes, num_classes, tuple(grid)
        self.embedding = nn.Embedding(num_codes, dim)
        self.start = nn.Embedding(num_classes, dim)  # one start token per class
        self.position = nn.Parameter(0.02 * torch.randn(1, grid[0] * grid[1], dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W); position p sees codes < p."""
        check_codes(codes, self.num_codes, self.grid)
        check_labels(labels, self.num_classes, len(codes))
        b, h, w = codes.shape
        tokens = self.embedding(codes.flatten(1))  # (B, H, W) -> (B, T, C)
        x = torch.cat([self.start(labels)[:, None], tokens[:, :-1]], dim=1)  # shift right
        logits = self.head(self.norm(self.blocks(x + self.position)))  # (B, T, K)
        return logits.transpose(1, 2).reshape(b, -1, h, w)  # -> (B, K, H, W)
