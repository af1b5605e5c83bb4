# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""Sampling new images from a prior: ancestral sampling in raster order with a temperature,
and a PNG grid of the images the VQ-VAE decodes from the sampled codes.

Chapter 8 (`notebooks/08_prior.ipynb`) samples CIFAR-10 images class by class with it.
"""

import math
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from vqvae_lite.metrics import evaluation_mode
from vqvae_lite.viz import image_grid


@torch.no_grad()
def sample(
    prior: nn.Module,
    labels: Tensor,
    grid: tuple[int, int] = (8, 8),
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ancestral sampling in raster order: labels (B,) -> codes (B, H, W) int64.

    Each code is drawn from softmax(logits / temperature) given the codes drawn before it;
    a CPU `generator` makes the draws reproducible on any device.
    """
    finite = isinstance(temperature, int | float) and math.isfinite(temperature)
    if not (finite and temperature > 0):
        raise ValueError(f"expected a finite temperature > 0, got {temperature!r}")
    device = next(iter(prior.state_dict().values())).device
    labels = labels.to(device)
    codes = torch.zeros(len(labels), *grid, dtype=torch.int64, device=device)
    with evaluation_mode(prior):
        for i in range(grid[0]):
            for j in range(grid[1]):
                logits = prior(codes, labels)[:, :, i, j].float() / temperature  # (B, K)
                probs = logits.softmax(dim=-1).cpu()
                drawn = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
                codes[:, i, j] = drawn[:, 0].to(device)
    return codes


def save_png(images: Tensor, path: str | Path, nrow: int = 10) -> Path:
    """Write uint8 images (N, 3, H, W) as one PNG grid, `nrow` to a row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = (image_grid(images, nrow=nrow) * 255).round().to(torch.uint8)  # (H', W', 3)
    Image.fromarray(grid.numpy()).save(path)
    return path
