# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""uint8 images on the training scale [-1, 1], their exact variance, and batches sliced
from one tensor that stays on the device.

Chapter 0 (`notebooks/00_data.ipynb`) explains every function here.
"""

import torch


def to_training_scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the scale the model trains on."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype}")
    return images.float().div_(127.5).sub_(1.0)


def from_training_scale(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> float in [0, 1], for display and PSNR."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def training_variance(images: torch.Tensor) -> float:
    """Variance of all pixels of uint8 images, measured on the training scale [-1, 1].

    Exact: computed from the counts of the 256 byte values, each mapped with
    `to_training_scale`.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype}")
    counts = torch.bincount(images.flatten(), minlength=256).double()  # (256,)
    byte_values = torch.arange(256, dtype=torch.uint8, device=images.device)
    values = to_training_scale(byte_values).double()  # (256,) in [-1, 1]
    share = counts / counts.sum()
    mean = (share * values).sum()
    return (share * (values - mean).square()).sum().item()


class ResidentBatches:
    """Endless shuffled batches sliced from a tensor that stays on `device`.

    Each epoch is one fresh random permutation of the images: no image appears twice
    within an epoch, and the len(images) % batch_size left over at its end (a different
    random few each epoch) wait for the next one. Batches are index slices, not a Python
    loop over files.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if not 0 < batch_size <= len(images):
            raise ValueError(f"batch_size must be 1..{len(images)}, got {batch_size}")
        self.images = images.to(device)  # (N, 3, H, W) uint8, resident
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(images), generator=self.generator)
        self.position = 0
        self.epoch = 0

    def __iter__(self):
        return self

    def next_indices(self) -> torch.Tensor:
        """The positions (B,) of the next batch in `images`, on its device."""
        if self.position + self.batch_size > len(self.order):  # drop the ragged tail
            self.order = torch.randperm(len(self.images), generator=self.generator)
            self.position = 0
            self.epoch += 1
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return index.to(self.images.device)

    def __next__(self) -> torch.Tensor:
        """The next batch: float32 (B, 3, H, W) on the training scale, channels-last."""
        batch = self.images[self.next_indices()]  # (B, 3, H, W) uint8
        return to_training_scale(batch).contiguous(memory_format=torch.channels_last)

    def state_dict(self) -> dict:
        """All it takes to continue the same sequence of batches after a restart."""
        return {
            "generator": self.generator.get_state(),
            "order": self.order,
            "position": self.position,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"]
        self.position = state["position"]
        self.epoch = state["epoch"]
