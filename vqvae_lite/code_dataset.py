# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""Codes as a data set: the checks that keep a prior from reading anything but code
indices and class labels, the VQ-VAE's codes of every image (encoded, decoded, and kept on
disk under a checksum), and endless shuffled batches of them.

Chapter 8 (`notebooks/08_prior.ipynb`) turns CIFAR-10 into codes with it.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vqvae_lite.checkpoint import checksum
from vqvae_lite.metrics import evaluation_mode
from vqvae_lite.model import VQVAE
from vqvae_lite.safe_files import load_under_key, save_under_key
from vqvae_lite.training_scale import ResidentBatches, to_training_scale


def check_codes(codes: Tensor, num_codes: int, grid: tuple[int, int] | None = None) -> None:
    """Raise a ValueError naming what is expected unless `codes` are integer indices of shape
    (B, H, W) (H, W = `grid` when given) in [0, num_codes)."""
    shape = "(B, H, W)" if grid is None else f"(B, {grid[0]}, {grid[1]})"
    expected = f"expected integer code indices of shape {shape} in [0, {num_codes})"
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"{expected}, got dtype {codes.dtype}")
    if codes.dim() != 3 or (grid is not None and tuple(codes.shape[1:]) != tuple(grid)):
        raise ValueError(f"{expected}, got shape {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
        low, high = int(codes.min()), int(codes.max())
        raise ValueError(f"{expected}, got values from {low} to {high}")


def check_labels(labels: Tensor, num_classes: int, batch: int) -> None:
    """Raise a ValueError unless `labels` are `batch` integer class labels in
    [0, num_classes)."""
    expected = f"expected {batch} integer class labels of shape ({batch},) in [0, {num_classes})"
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{expected}, got dtype {labels.dtype}")
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"{expected}, got shape {tuple(labels.shape)}")
    if batch and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{expected}, got an unknown class {int(labels.max())}")


@torch.no_grad()
def encode_codes(model: VQVAE, images: Tensor, batch_size: int = 500) -> Tensor:
    """uint8 images (N, 3, H, W) -> their code indices (N, H/4, W/4) int64, on the CPU.

    The model encodes in eval mode: an EMA codebook must not learn from what it encodes."""
    device = next(model.parameters()).device
    codes = []
    with evaluation_mode(model):
        for batch in images.split(batch_size):
            x = to_training_scale(batch.to(device))  # (b, 3, H, W) in [-1, 1]
            x = x.contiguous(memory_format=torch.channels_last)
            codes.append(model.quantizer(model.encode(x)).indices.cpu())  # (b, h, w)
    return torch.cat(codes)


@torch.no_grad()
def decode_codes(model: VQVAE, codes: Tensor) -> Tensor:
    """Code indices (B, h, w) -> uint8 images (B, 3, 4h, 4w) in [0, 255]."""
    check_codes(codes, model.quantizer.num_codes)
    device = next(model.parameters()).device
    x_hat = model.decode_indices(codes.long().to(device)).float()  # (B, 3, 4h, 4w) in [-1, 1]
    return ((x_hat + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


@dataclass
class CodeSplits:
    """A data set of codes: the VQ-VAE's indices of every image, with the image's class."""

    train: Tensor  # (N_train, H, W) int64
    test: Tensor  # (N_test, H, W) int64
    train_labels: Tensor  # (N_train,) int64
    test_labels: Tensor  # (N_test,) int64
    num_codes: int  # the size of the index space: the quantiser's num_codes

    def fingerprint(self) -> str:
        """A short hash of the training codes: a resumed prior must see the same codes."""
        return hashlib.sha256(self.train.numpy().tobytes()).hexdigest()[:16]


def encode_splits(model: VQVAE, splits) -> CodeSplits:
    """Encode both splits of an `ImageSplits` with a trained VQ-VAE."""
    return CodeSplits(
        encode_codes(model, splits.train),
        encode_codes(model, splits.test),
        splits.train_labels.long(),
        splits.test_labels.long(),
        model.quantizer.num_codes,
    )


def cached_codes(model: VQVAE, splits, path: str | Path) -> CodeSplits:
    """`encode_splits`, kept in the file `path`: a file written for the same weights and the
    same images is read instead of encoding again; any other (or a damaged one) is replaced,
    atomically (chapter 0's `save_under_key`)."""
    key = checksum({"weights": model.state_dict(), "train": splits.train, "test": splits.test})
    saved = load_under_key(path, key)
    if saved is not None:
        return CodeSplits(**saved)
    codes = encode_splits(model, splits)
    save_under_key(path, key, vars(codes))
    return codes


class CodeBatches(ResidentBatches):
    """Endless shuffled batches of (codes (B, H, W), labels (B,)): chapter 0's
    `ResidentBatches`, the same epochs and the same resume, over code grids and their labels."""

    def __init__(self, codes: Tensor, labels: Tensor, batch_size: int, device, seed: int = 0):
        super().__init__(codes, batch_size, device, seed)  # self.images: the code grids
        self.labels = labels.to(device)

    def __next__(self) -> tuple[Tensor, Tensor]:
        index = self.next_indices()
        return self.images[index], self.labels[index]
