# Generated from notebooks/03_straight_through.ipynb by tools/export.py: edit the notebook.
"""The vector quantiser: flatten, look up the nearest code, reshape, and pass gradients straight
through the argmin.

Chapter 3 (`notebooks/03_straight_through.ipynb`) shows why the straight-through trick is needed.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqvae_lite.codebook import lookup, nearest_codes


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """Forward value z_q, backward gradient copied unchanged to z_e: z_e + sg[z_q - z_e]."""
    return z_e + (z_q - z_e).detach()


def check_latents(z: Tensor, dim: int) -> None:
    """Raise a ValueError naming the expected shape (B, dim, H, W) if z cannot be quantised."""
    expected = f"expected a float tensor of shape (B, {dim}, H, W)"
    if z.dim() != 4:
        raise ValueError(f"{expected}, got rank {z.dim()} with shape {tuple(z.shape)}")
    if z.shape[1] != dim:
        raise ValueError(f"{expected}, got {z.shape[1]} channels in shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{expected}, got dtype {z.dtype}")
    if not torch.compiler.is_compiling() and not torch.isfinite(z).all():
        raise ValueError(f"{expected} with finite values, got NaN or inf")


@dataclass
class Quantized:
    """What the quantiser returns for latents z_e of shape (B, D, H, W)."""

    z_q: Tensor  # (B, D, H, W) code vectors, with the straight-through gradient to z_e
    codes: Tensor  # (B, D, H, W) the same code vectors, with gradient to the codebook
    indices: Tensor  # (B, H, W) int64 index of the chosen code


class VectorQuantizer(nn.Module):
    """K learnable codes of dimension D; each latent vector is replaced by its nearest code."""

    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.codebook = nn.Parameter(
            torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes)
        )

    def forward(self, z_e: Tensor) -> Quantized:
        check_latents(z_e, self.dim)
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B, D, H, W) -> (B*H*W, D)
        indices = nearest_codes(flat, self.codebook)  # (B*H*W,)
        codes = lookup(indices, self.codebook)  # (B*H*W, D)
        codes = codes.view(b, h, w, d).permute(0, 3, 1, 2)  # -> (B, D, H, W)
        codes = codes.to(z_e.dtype)
        return Quantized(straight_through(z_e, codes), codes, indices.view(b, h, w))
