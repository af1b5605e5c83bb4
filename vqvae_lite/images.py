# Generated from notebooks/10_command_line.ipynb by tools/export.py: edit the notebook.
"""A trained VQ-VAE on your own image files: an image to its codes, codes back to an image,
and an image to its reconstruction.

The appendix "Training for real" (`notebooks/10_command_line.ipynb`) shows them at work;
chapter 0 reads images the same way for training, chapter 5 explains `encode`, the quantiser
and `decode_indices`.
"""

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from vqvae_lite.image_folder import UNREADABLE, DataError, check_image_size, decode_image
from vqvae_lite.model import VQVAE
from vqvae_lite.shipped import load_vqvae
from vqvae_lite.training_scale import from_training_scale, to_training_scale

AnyModel = VQVAE | str | Path  # a model, a checkpoint's path or a shipped name


def load_image(path: str | Path, size: int | None = None) -> Tensor:
    """An image file as a (1, 3, H, W) uint8 tensor, read as chapter 0 reads training images.

    With `size`, resized (shorter side) and centre-cropped to `size` x `size`, as
    `load_cifar10(image_size=size)` does; without, at its own size less the last rows and
    columns that keep H and W from being multiples of 4 (the encoder halves them twice).
    """
    check_image_size(size)
    try:
        pixels, _ = decode_image(Path(path), size)  # (H, W, 3) uint8, RGB, upright
    except UNREADABLE as error:  # missing, not an image, cut short, ...
        reason = f"{type(error).__name__}: {error}"
        raise DataError(f"{path} cannot be read as an image ({reason})") from None
    height, width = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    if not (height and width):
        raise DataError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels: at least 4x4")
    image = torch.from_numpy(pixels[:height, :width].copy())  # (H, W, 3)
    return image.permute(2, 0, 1).unsqueeze(0)  # -> (1, 3, H, W)


def ready_model(model: AnyModel) -> VQVAE:
    """The model itself, or loaded by `load_vqvae`; a ValueError if it is in training mode,
    where an EMA codebook would learn from the images it encodes."""
    if not isinstance(model, VQVAE):
        model, _ = load_vqvae(model)  # eval mode
    if model.training:
        raise ValueError("the model is in training mode: call model.eval() first")
    return model


@torch.no_grad()
def encode_image(model: AnyModel, path: str | Path, size: int | None = None) -> Tensor:
    """An image file -> its code indices, (1, H/4, W/4) int64 on the model's device."""
    model = ready_model(model)
    device = next(model.parameters()).device
    x = to_training_scale(load_image(path, size).to(device))  # (1, 3, H, W) in [-1, 1]
    return model.quantizer(model.encode(x)).indices  # (1, D, H/4, W/4) -> (1, H/4, W/4)


@torch.no_grad()
def decode_codes(model: AnyModel, indices: Tensor) -> Image.Image:
    """Code indices (1, h, w) -> the image they decode to, 4w x 4h pixels."""
    model = ready_model(model)
    if indices.dim() != 3 or len(indices) != 1:
        raise ValueError(f"expected code indices of shape (1, h, w), got {tuple(indices.shape)}")
    device = next(model.parameters()).device
    x_hat = model.decode_indices(indices.to(device))  # (1, h, w) -> (1, 3, 4h, 4w)
    pixels = (from_training_scale(x_hat[0]) * 255).round().to(torch.uint8)  # (3, 4h, 4w)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())  # -> (4h, 4w, 3)


def reconstruct(model: AnyModel, path: str | Path, size: int | None = None) -> Image.Image:
    """An image file -> the model's reconstruction of it, through its codes."""
    model = ready_model(model)
    return decode_codes(model, encode_image(model, path, size))
