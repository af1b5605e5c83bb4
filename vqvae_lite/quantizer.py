# Generated from notebooks/03_straight_through.ipynb by tools/export.py: edit the notebook.
"""Quantisers: the interface every one of them shares, its registry, and the vector quantiser
with the straight-through gradient.

Chapter 3 (`notebooks/03_straight_through.ipynb`) shows why the straight-through trick is needed
and builds the interface; chapter 4 explains the two loss terms the vector quantiser returns.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    """What every quantiser returns for latents z_e of shape (B, D, H, W)."""

    z_q: Tensor  # (B, D, H, W) quantised latents, with a gradient path to z_e
    indices: Tensor  # (B, H, W) int64 code index of every position, in [0, num_codes)
    losses: dict[str, Tensor]  # the quantiser's own weighted loss terms (scalars)


class Quantizer(nn.Module):
    """The interface of every quantiser in this book. A model or a training loop calls only:

    - `forward(z_e)` -> `Quantized`, for latents z_e (B, dim, H, W);
    - `decode(indices)` -> (B, dim, H, W) latents, for indices (B, H, W);
    - `initialize(sample)` once before training, where `sample()` returns encoder outputs
      (N, dim); the default does nothing;
    - `upkeep(z_e, indices)` after every optimiser step, with the step's latents and indices;
      returns how many codes it moved (the default moves none).

    `num_codes` is the size of the index space and `dim` the length of each latent vector.
    """

    num_codes: int
    dim: int

    def decode(self, indices: Tensor) -> Tensor:
        raise NotImplementedError

    def initialize(self, sample: Callable[[], Tensor]) -> None:
        """A data-dependent start, before the first step (chapter 7 uses it)."""

    def upkeep(self, z_e: Tensor, indices: Tensor) -> int:
        """Changes to the codes between steps (chapter 7 uses it); returns how many moved."""
        return 0


def check_indices(indices: Tensor, num_codes: int) -> None:
    """Raise a ValueError naming the expected shape (B, H, W) and range for unusable indices."""
    expected = f"expected integer code indices of shape (B, H, W) in [0, {num_codes})"
    if indices.dim() != 3:
        raise ValueError(f"{expected}, got shape {tuple(indices.shape)}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"{expected}, got dtype {indices.dtype}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_codes):
        low, high = int(indices.min()), int(indices.max())
        raise ValueError(f"{expected}, got values from {low} to {high}")


def codebook_loss(z_e: Tensor, codes: Tensor) -> Tensor:
    """mean (sg[z_e] - e)^2: pulls the codes towards the encoder outputs (chapter 4)."""
    with torch.autocast(z_e.device.type, enabled=False):
        return F.mse_loss(codes.float(), z_e.detach().float())


def commitment_loss(z_e: Tensor, codes: Tensor) -> Tensor:
    """mean (z_e - sg[e])^2: keeps the encoder close to its codes (chapter 4)."""
    with torch.autocast(z_e.device.type, enabled=False):
        return F.mse_loss(z_e.float(), codes.detach().float())


class VectorQuantizer(Quantizer):
    """K learnable codes of dimension D; each latent vector is replaced by its nearest code.

    Its loss terms are the codebook term and beta times the commitment term (chapter 4).
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.codebook = nn.Parameter(
            torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes)
        )

    def lookup(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codes of z_e (B, D, H, W): codes (B, D, H, W) float32, indices (B, H, W)."""
        check_latents(z_e, self.dim)
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B, D, H, W) -> (B*H*W, D)
        indices = nearest_codes(flat, self.codebook)  # (B*H*W,), float32 distances
        codes = lookup(indices, self.codebook)  # (B*H*W, D)
        codes = codes.view(b, h, w, d).permute(0, 3, 1, 2)  # -> (B, D, H, W)
        return codes, indices.view(b, h, w)

    def forward(self, z_e: Tensor) -> Quantized:
        codes, indices = self.lookup(z_e)
        losses = {
            "codebook": codebook_loss(z_e, codes),
            "commitment": self.beta * commitment_loss(z_e, codes),
        }
        return Quantized(straight_through(z_e, codes.to(z_e.dtype)), indices, losses)

    def decode(self, indices: Tensor) -> Tensor:
        """(B, H, W) indices -> (B, D, H, W) code vectors."""
        check_indices(indices, self.num_codes)
        return self.codebook[indices].permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)

    @torch.no_grad()
    def place_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Put the codes of mask `which` (K,) at `vectors` (n, D): chapter 7's fixes use it."""
        self.codebook[which] = vectors.to(self.codebook.dtype)


QUANTIZERS: dict[str, type[Quantizer]] = {}  # name -> class: the one registry of quantisers


def register_quantizer(name: str):
    """Class decorator: make a quantiser available as `ModelConfig(quantizer=name)`."""

    def register(cls: type[Quantizer]) -> type[Quantizer]:
        QUANTIZERS[name] = cls
        return cls

    return register


def build_quantizer(name: str, num_codes: int, dim: int, beta: float, **options) -> Quantizer:
    """The registered quantiser `name`, built with the model's sizes and its own options."""
    if name not in QUANTIZERS:
        known = ", ".join(sorted(QUANTIZERS))
        raise ValueError(f"unknown quantizer {name!r}; registered: {known}")
    try:
        return QUANTIZERS[name](num_codes=num_codes, dim=dim, beta=beta, **options)
    except TypeError as error:
        raise ValueError(f"quantizer {name!r} cannot take options {options}: {error}") from None


register_quantizer("vq")(VectorQuantizer)
