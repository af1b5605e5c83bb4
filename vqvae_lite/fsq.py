# Generated from notebooks/09_beyond_the_codebook.ipynb by tools/export.py: edit the notebook.
"""Finite scalar quantisation (FSQ): no codebook, each channel rounded to a few levels.

Chapter 9 (`notebooks/09_beyond_the_codebook.ipynb`) builds it and checks it against
vector-quantize-pytorch's `FSQ`.
"""

import math

import torch
from torch import Tensor, nn

from vqvae_lite.quantizer import (
    Quantized,
    Quantizer,
    check_indices,
    check_latents,
    register_quantizer,
)


def round_straight_through(z: Tensor) -> Tensor:
    """Forward value round(z), backward gradient 1: z + sg[round(z) - z] (chapter 3's trick)."""
    return z + (z.round() - z).detach()


def bound(z: Tensor, levels: Tensor, eps: float = 1e-3) -> Tensor:
    """Squash each channel of z (..., d) into the range that rounds to `levels` (d,) values.

    A channel with L levels goes to (L-1)/2 tanh(z), shifted by half a step for even L, so that
    round() gives exactly L integers: -(L-1)/2 .. (L-1)/2 for odd L, -L/2 .. L/2-1 for even L.
    """
    half = (levels - 1) * (1 + eps) / 2  # (d,), eps keeps the outer values inside the range
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)  # (d,)
    shift = torch.atanh(offset / half)  # so that z = 0 lands on level 0
    return torch.tanh(z + shift) * half - offset


@register_quantizer("fsq")
class FiniteScalarQuantizer(Quantizer):
    """FSQ (Mentzer et al., 2023): project D -> len(levels) channels, bound, round, project back.

    Channel c takes `levels[c]` values; the code of a position is one point of that grid, and
    its index the mixed-radix number of its levels (channel 0 the lowest digit). `num_codes`
    must equal prod(levels). No loss terms, no codebook to collapse, nothing to upkeep.
    """

    def __init__(self, num_codes: int, dim: int, levels=(8, 8, 8)):
        super().__init__()
        if not levels or any(int(level) != level or level < 3 for level in levels):
            raise ValueError(
                f"FSQ levels must be integers >= 3, got {list(levels)}: with 2 levels the "
                "shifted bound puts z = 0 deep inside level 0, where its slope is about 1e-3, "
                "and the channel almost never leaves it"
            )
        levels = [int(level) for level in levels]
        if num_codes != math.prod(levels):
            raise ValueError(
                f"ModelConfig.num_codes must equal prod(levels) = {math.prod(levels)} for "
                f"levels {levels}, got {num_codes}"
            )
        self.num_codes, self.dim, self.levels = num_codes, dim, levels
        self.register_buffer("_levels", torch.tensor(levels), persistent=False)  # (d,)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0)  # (d,) 1, L0, L0 L1, ..
        self.register_buffer("_basis", basis, persistent=False)
        self.project_in = nn.Linear(dim, len(levels))  # D -> d
        self.project_out = nn.Linear(len(levels), dim)  # d -> D

    def quantize(self, z: Tensor) -> Tensor:
        """(..., d) projected latents -> (..., d) grid points in [-1, 1], float32."""
        with torch.autocast(z.device.type, enabled=False):
            rounded = round_straight_through(bound(z.float(), self._levels))
            return rounded / (self._levels // 2)  # integer levels -> [-1, 1]

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., d) grid points -> (...) int64 indices in [0, num_codes)."""
        digits = (codes * (self._levels // 2) + self._levels // 2).round().long()  # 0..L-1
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) indices -> (..., d) grid points, the inverse of `codes_to_indices`."""
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels  # (..., d)
        return (digits - self._levels // 2).float() / (self._levels // 2)

    def forward(self, z_e: Tensor) -> Quantized:
        check_latents(z_e, self.dim)
        x = z_e.permute(0, 2, 3, 1).to(self.project_in.weight.dtype)  # -> (B, H, W, D)
        z = self.project_in(x)  # (B, H, W, d)
        codes = self.quantize(z)  # (B, H, W, d), gradient by straight-through rounding
        z_q = self.project_out(codes.to(z.dtype)).permute(0, 3, 1, 2)  # -> (B, D, H, W)
        return Quantized(z_q.to(z_e.dtype), self.codes_to_indices(codes.detach()), {})

    def decode(self, indices: Tensor) -> Tensor:
        """(B, H, W) indices -> (B, D, H, W) latents."""
        check_indices(indices, self.num_codes)
        codes = self.indices_to_codes(indices).to(self.project_out.weight.dtype)  # (B,H,W,d)
        return self.project_out(codes).permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)
