# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""Image grids for the chapters: a batch of images, or originals above their reconstructions.

Chapter 0 (`notebooks/00_data.ipynb`) introduces these helpers; chapters 6 and 7 use them.
"""

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from vqvae_lite.training_scale import from_training_scale


def display_pixels(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) in [0, 255], or float on the training scale [-1, 1] -> float in [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if images.is_floating_point():
        return from_training_scale(images.float())
    raise ValueError(f"expected uint8 or floating-point images, got {images.dtype}")


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2) -> Tensor:
    """Tile N images, `nrow` to a row, into one (H', W', 3) float picture with white gaps."""
    pixels = display_pixels(images)  # (N, 3, H, W) in [0, 1]
    n, _, h, w = pixels.shape
    cols = min(nrow, n)
    rows = -(-n // cols)  # ceiling division
    grid = torch.ones(rows * (h + padding) + padding, cols * (w + padding) + padding, 3)
    for i, image in enumerate(pixels):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[top : top + h, left : left + w] = image.permute(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    return grid


def show_images(
    images: Tensor, nrow: int = 8, title: str | None = None, ax: Axes | None = None
) -> Axes:
    """Draw images (uint8, or float on the training scale [-1, 1]) as a grid; return the axes."""
    grid = image_grid(images, nrow)
    if ax is None:
        cols = min(nrow, len(images))
        rows = -(-len(images) // cols)
        _, ax = plt.subplots(figsize=(0.8 * cols + 0.2, 0.8 * rows + 0.4), layout="constrained")
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title)
    return ax


def show_reconstructions(
    originals: Tensor,
    reconstructions: Tensor,
    n: int = 8,
    labels: tuple[str, str] = ("original", "reconstruction"),
    title: str | None = None,
) -> Figure:
    """The first `n` originals in the top row, their reconstructions in the row below."""
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"originals {tuple(originals.shape)} and reconstructions "
            f"{tuple(reconstructions.shape)} must have the same shape"
        )
    n = min(n, len(originals))
    figure, axes = plt.subplots(2, 1, figsize=(0.8 * n + 0.8, 2.0), layout="constrained")
    for ax, images, label in zip(axes, (originals, reconstructions), labels, strict=True):
        show_images(images[:n], nrow=n, ax=ax)
        ax.set_ylabel(label)
    if title is not None:
        figure.suptitle(title)
    return figure
