"""CIFAR-10, or any folder of class sub-folders, as uint8 tensors kept on the training device.

Chapter 0 (`notebooks/00_data.ipynb`) explains every function here.
"""

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

DATA_ENV = "VQVAE_LITE_DATA"  # where to find the images: a folder, an archive or "cifar10"
CACHE_ENV = "VQVAE_LITE_CACHE"  # where decoded tensors and downloads are kept
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
OFFLINE_COPY = Path("shared") / "data" / "cifar10-jpeg.tar.gz"


@dataclass
class ImageSplits:
    """Train and test images as uint8 tensors of shape (N, 3, H, W), with integer labels."""

    train: torch.Tensor  # (N_train, 3, H, W) uint8
    test: torch.Tensor  # (N_test, 3, H, W) uint8
    train_labels: torch.Tensor  # (N_train,) int64
    test_labels: torch.Tensor  # (N_test,) int64
    classes: list[str]
    source: str  # a short, machine-independent name of where the images came from


def cache_dir() -> Path:
    """The folder for decoded tensors and downloads: $VQVAE_LITE_CACHE or ~/.cache/vqvae-lite."""
    default = Path.home() / ".cache" / "vqvae-lite"
    path = Path(os.environ.get(CACHE_ENV, default)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_offline_copy(start: Path | None = None) -> Path | None:
    """Look for `shared/data/cifar10-jpeg.tar.gz` in `start` and each of its parents."""
    start = Path.cwd() if start is None else Path(start)
    for folder in [start, *start.resolve().parents]:
        candidate = folder / OFFLINE_COPY
        if candidate.is_file():
            return candidate
    return None


def _read_folder(root: Path, split: str, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of `root/split/<class>/` into (N, 3, H, W) uint8 and (N,) labels."""
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / split / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise FileNotFoundError(f"no images under {root.name}/{split}/<class>/")
    first = np.asarray(Image.open(files[0][0]).convert("RGB"))
    images = np.empty((len(files), *first.shape), dtype=np.uint8)  # (N, H, W, 3)
    for i, (path, _) in enumerate(tqdm(files, desc=f"decoding {split}", leave=False)):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        if pixels.shape != first.shape:
            raise ValueError(f"{path.name} is {pixels.shape}, expected {first.shape} like the rest")
        images[i] = pixels
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels  # -> (N, 3, H, W)


def load_image_folder(root: str | Path) -> ImageSplits:
    """Read `root/train/<class>/*` and `root/test/<class>/*`, or a .tar.gz archive holding them.

    Decoding happens once; the tensors are cached in `cache_dir()` under a key made from the
    path, size and modification time of `root`.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    stat = root.stat()
    key = hashlib.sha256(f"{root.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cached = cache_dir() / f"folder-{key[:16]}.pt"
    if cached.is_file():
        return ImageSplits(**torch.load(cached, weights_only=True))
    if root.is_file():
        extracted = cache_dir() / f"extracted-{key[:16]}"
        if not extracted.is_dir():
            partial = extracted.with_name(f"{extracted.name}.{os.getpid()}.partial")
            with tarfile.open(root) as archive:
                archive.extractall(partial, filter="data")
            partial.rename(extracted)
        tops = [p for p in extracted.iterdir() if p.is_dir()]
        folder = extracted if (extracted / "train").is_dir() else tops[0]
    else:
        folder = root
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"{root.name} has no {split}/ folder of class sub-folders")
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    train, train_labels = _read_folder(folder, "train", classes)
    test, test_labels = _read_folder(folder, "test", classes)
    splits = ImageSplits(train, test, train_labels, test_labels, classes, source=root.name)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    torch.save(vars(splits), partial)
    partial.rename(cached)  # atomic: a reader never sees half a file
    return splits


def download_cifar10() -> ImageSplits:
    """Download CIFAR-10 with torchvision into `cache_dir()` and return it as uint8 tensors."""
    from torchvision.datasets import CIFAR10

    root = cache_dir() / "torchvision"
    train = CIFAR10(root, train=True, download=True)
    test = CIFAR10(root, train=False, download=True)

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()  # (N,H,W,3)->(N,3,H,W)

    return ImageSplits(
        to_tensor(train.data),
        to_tensor(test.data),
        torch.tensor(train.targets),
        torch.tensor(test.targets),
        list(train.classes),
        source="cifar10 (torchvision)",
    )


def load_cifar10(data: str | Path | None = None) -> ImageSplits:
    """Find CIFAR-10 and return it as uint8 tensors. Never falls back to fake data.

    Looks, in order, at: the `data` argument; the environment variable `VQVAE_LITE_DATA`;
    `shared/data/cifar10-jpeg.tar.gz` beside the working folder or any parent; and finally
    torchvision's download. `data="cifar10"` asks for the download directly.
    """
    looked = []
    for name, value in (("the data argument", data), (f"${DATA_ENV}", os.environ.get(DATA_ENV))):
        if value is None or value == "":
            looked.append(f"{name}: not set")
            continue
        if str(value) == "cifar10":
            return download_cifar10()
        if Path(value).expanduser().exists():
            return load_image_folder(value)
        looked.append(f"{name}: {value} does not exist")
    offline = find_offline_copy()
    if offline is not None:
        return load_image_folder(offline)
    looked.append(f"{OFFLINE_COPY} in the working folder and its parents: not found")
    try:
        return download_cifar10()
    except Exception as error:  # no network, blocked host, ...
        looked.append(f"torchvision download: {type(error).__name__}: {error}")
    raise FileNotFoundError(
        "No CIFAR-10 images found. Looked at:\n  - "
        + "\n  - ".join(looked)
        + f"\nPoint at an image folder (train/<class>/*.jpg, test/<class>/*.jpg) or a .tar.gz of "
        f"one with data=... or the environment variable {DATA_ENV}, or pass data='cifar10' "
        "on a machine with internet."
    )


def to_training_scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the scale the model trains on."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {images.dtype}")
    return images.float().div_(127.5).sub_(1.0)


def from_training_scale(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> float in [0, 1], for display and PSNR."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def training_variance(images: torch.Tensor, chunk: int = 4096) -> float:
    """Variance of all pixels, measured on the training scale [-1, 1] (float64 accumulation)."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), chunk):
        x = to_training_scale(images[start : start + chunk]).double()
        total += x.sum().item()
        total_sq += x.square().sum().item()
        count += x.numel()
    mean = total / count
    return total_sq / count - mean * mean


class ResidentBatches:
    """Endless shuffled batches sliced from a uint8 tensor that stays on `device`.

    Every pass over the data is one epoch in a fresh random order (no images skipped or
    repeated within an epoch); batches are index slices, not a Python loop over files.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if batch_size > len(images):
            raise ValueError(f"batch_size {batch_size} is larger than the {len(images)} images")
        self.images = images.to(device)  # (N, 3, H, W) uint8, resident
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(images), generator=self.generator)
        self.position = 0
        self.epoch = 0

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        """The next batch as float32 (B, 3, H, W) on the training scale, channels-last."""
        if self.position + self.batch_size > len(self.order):  # drop the ragged tail
            self.order = torch.randperm(len(self.images), generator=self.generator)
            self.position = 0
            self.epoch += 1
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        batch = self.images[index.to(self.images.device)]  # (B, 3, H, W) uint8
        return to_training_scale(batch).contiguous(memory_format=torch.channels_last)

    def state_dict(self) -> dict:
        """Everything needed to continue the same sequence of batches after a restart."""
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
