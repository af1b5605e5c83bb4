# Generated from notebooks/03_straight_through.ipynb by tools/export.py: edit the notebook.
"""Quantisers: the interface every one of them shares, its registry, and the vector quantiser
with the straight-through gradient.

Chapter 3 (`notebooks/03_straight_through.ipynb`) shows why the straight-through trick is needed
and builds the interface; chapter 4 explains the two loss terms the vector quantiser returns.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
      returns how many codes it moved (the default moves none);
    - `stage_counts(counts)`: the use of each code, per stage, from the counts of the indices;
      one stage by default (chapter 9's residual VQ has several).

    `num_codes` is the size of the index space and `dim` the length of each latent vector.
    The constructor takes `num_codes`, `dim` and options of its own; `takes_beta` says whether
    one of them is `beta`, the weight of a commitment term.
    """

    num_codes: int
    dim: int
    takes_beta: bool = False

    def decode(self, indices: Tensor) -> Tensor:
        raise NotImplementedError

    def initialize(self, sample: Callable[[], Tensor]) -> None:
        """A data-dependent start, before the first step (chapter 7 uses it)."""

    def upkeep(self, z_e: Tensor, indices: Tensor) -> int:
        """Changes to the codes between steps (chapter 7 uses it); returns how many moved."""
        return 0

    def stage_counts(self, counts: Tensor) -> Tensor:
        """Counts (num_codes,) of the indices -> (stages, codes per stage): one stage here."""
        return counts.unsqueeze(0)


class CodebookQuantizer(Quantizer):
    """A quantiser that keeps its codes in a (K, dim) tensor `codebook`: chapter 7's fixes
    work on any of them through two more methods:

    - `lookup(z_e)` -> the nearest codes (B, dim, H, W) in float32 and their indices (B, H, W);
    - `place_codes(which, vectors)` puts the codes of mask `which` (K,) at `vectors` (n, dim).
    """

    codebook: Tensor

    def lookup(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def place_codes(self, which: Tensor, vectors: Tensor) -> None:
        raise NotImplementedError


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


class VectorQuantizer(CodebookQuantizer):
    """K learnable codes of dimension D; each latent vector is replaced by its nearest code.

    Its loss terms are the codebook term and beta times the commitment term (chapter 4).
    """

    takes_beta = True

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


def registered_quantizers() -> dict[str, type[Quantizer]]:
    """The registry, after importing every module of this package that registers a quantiser
    (its source holds `@register_quantizer(`): a quantiser added as a new module is found
    without any other file naming it."""
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if "@register_quantizer(" in path.read_text(encoding="utf-8"):
            importlib.import_module(f"{__package__}.{path.stem}")
    return QUANTIZERS


def build_quantizer(
    name: str, num_codes: int, dim: int, beta: float = 0.25, **options
) -> Quantizer:
    """The registered quantiser `name`, built with the model's sizes and its own options;
    `beta` goes to the quantisers that take one (`takes_beta`)."""
    if name not in QUANTIZERS and name not in registered_quantizers():
        known = ", ".join(sorted(QUANTIZERS))
        raise ValueError(f"unknown quantizer {name!r}; registered: {known}")
    cls = QUANTIZERS[name]
    if cls.takes_beta:
        options = {"beta": beta} | options
    try:
        return cls(num_codes=num_codes, dim=dim, **options)
    except TypeError as error:
        raise ValueError(f"quantizer {name!r} cannot take options {options}: {error}") from None


register_quantizer("vq")(VectorQuantizer)
