"""The loader's splits back in the order of their files, for tests that find an image by its
place among the files (class folder by class folder, then by name)."""

import torch

from vqvae_lite.data import fair_order
from vqvae_lite.image_folder import ImageSplits


def in_file_order(splits: ImageSplits) -> ImageSplits:
    """Undo `fair_order` on both splits: the files' labels are the sorted labels."""
    undone = {}
    for split in ("train", "test"):
        labels = getattr(splits, f"{split}_labels")  # (N,) in the fair order
        order = fair_order(labels.sort().values)  # file position of each loaded image
        back = torch.argsort(order)  # (N,) loaded position of each file
        undone[split] = getattr(splits, split)[back]
        undone[f"{split}_labels"] = labels[back]
    return ImageSplits(**{**vars(splits), **undone})
