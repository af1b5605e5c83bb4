# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""Sampling new images from a prior: ancestral sampling in raster order with a temperature
and, optionally, guidance towards the class; and a PNG grid of the images the VQ-VAE decodes
from the sampled codes.

Chapter 8 (`notebooks/08_prior.ipynb`) samples CIFAR-10 images class by class with it.
"""

import math
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from vqvae_lite.code_dataset import check_labels
from vqvae_lite.metrics import evaluation_mode
from vqvae_lite.viz import image_grid


def guided_log_probs(
    class_log_probs: Tensor, labels: Tensor, class_log_posterior: Tensor, guidance: float
) -> Tensor:
    """The next code's guided log-probabilities, up to a constant per row:
    (1 + s) log p(x | c) - s log p(x), for the wanted class c and guidance s.

    class_log_probs (B, C, K): log p(next code | codes so far, class) for every class;
    labels (B,): the wanted class c; class_log_posterior (B, C): log p(class | codes so far),
    which weighs the classes in p(x) = sum over classes of p(class) p(x | class). -> (B, K)
    """
    wanted = class_log_probs[torch.arange(len(labels)), labels]  # (B, C, K) -> (B, K)
    marginal = torch.logsumexp(class_log_posterior[:, :, None] + class_log_probs, dim=1)
    return wanted + guidance * (wanted - marginal)  # (B, K)


def check_sampling(temperature: float, guidance: float) -> None:
    """Raise a ValueError unless the temperature is finite and > 0 and the guidance finite
    and >= 0."""
    finite = isinstance(temperature, int | float) and math.isfinite(temperature)
    if not (finite and temperature > 0):
        raise ValueError(f"expected a finite temperature > 0, got {temperature!r}")
    finite = isinstance(guidance, int | float) and math.isfinite(guidance)
    if not (finite and guidance >= 0):
        raise ValueError(f"expected a finite guidance >= 0, got {guidance!r}")


@torch.no_grad()
def sample(
    prior: nn.Module,
    labels: Tensor,
    grid: tuple[int, int] = (8, 8),
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    guidance: float = 0.0,
) -> Tensor:
    """Ancestral sampling in raster order: labels (B,) -> codes (B, H, W) int64.

    Each code is drawn from softmax(logits / temperature) given the codes drawn before it;
    a CPU `generator` makes the draws reproducible on any device. With `guidance` s > 0 the
    logits are `guided_log_probs`: the prior runs once per class, for p(x) with the class
    summed out (the classes equally likely), at num_classes times the time and memory.
    """
    check_sampling(temperature, guidance)
    device = next(iter(prior.state_dict().values())).device
    labels = labels.to(device)
    check_labels(labels, prior.num_classes, len(labels))
    batch, classes = len(labels), prior.num_classes
    codes = torch.zeros(batch, *grid, dtype=torch.int64, device=device)
    every_class = torch.arange(classes, device=device).repeat(batch)  # (B * C,)
    seen = torch.zeros(batch, classes, device=device)  # log p(codes so far | class), (B, C)
    with evaluation_mode(prior):
        for i in range(grid[0]):
            for j in range(grid[1]):
                if guidance:
                    logits = prior(codes.repeat_interleave(classes, 0), every_class)
                    per_class = logits[:, :, i, j].float().log_softmax(-1)  # (B * C, K)
                    per_class = per_class.view(batch, classes, -1)  # (B, C, K)
                    posterior = seen.log_softmax(dim=1)  # log p(class | codes so far)
                    logits = guided_log_probs(per_class, labels, posterior, guidance)
                else:
                    logits = prior(codes, labels)[:, :, i, j].float()  # (B, K)
                probs = (logits / temperature).softmax(dim=-1).cpu()
                drawn = torch.multinomial(probs, 1, generator=generator).to(device)  # (B, 1)
                codes[:, i, j] = drawn[:, 0]
                if guidance:
                    seen += per_class.gather(2, drawn[:, None].expand(-1, classes, 1))[..., 0]
    return codes


def save_png(images: Tensor, path: str | Path, nrow: int = 10) -> Path:
    """Write uint8 images (N, 3, H, W) as one PNG grid, `nrow` to a row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = (image_grid(images, nrow=nrow) * 255).round().to(torch.uint8)  # (H', W', 3)
    Image.fromarray(grid.numpy()).save(path)
    return path
