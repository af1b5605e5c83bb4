# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
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
HOW_TO_POINT = (
    f"Point data=... or ${DATA_ENV} at an image folder (train/<class>/*.jpg and "
    "test/<class>/*.jpg) or a .tar.gz of one, or pass data='cifar10' to download CIFAR-10."
)


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


def _cache_key(root: Path) -> str:
    """A key that changes with `root`: an archive's size and time, or a folder's times.

    Adding or removing an image changes the time of its class folder only, so for a folder the
    times of its split and class sub-folders are part of the key.
    """
    stat = root.stat()
    text = f"{root.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if root.is_dir():
        text += "".join(f"|{p.stat().st_mtime_ns}" for p in sorted(root.glob("*/*")) if p.is_dir())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_image_folder(root: str | Path) -> ImageSplits:
    """Read `root/train/<class>/*` and `root/test/<class>/*`, or a .tar.gz archive holding them.

    Decoding happens once; the tensors are cached in `cache_dir()` under a key that changes when
    the archive or the folder's images change.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    key = _cache_key(root)
    cached = cache_dir() / f"folder-{key}.pt"
    if cached.is_file():
        return ImageSplits(**torch.load(cached, weights_only=True))
    if root.is_file():
        extracted = cache_dir() / f"extracted-{key}"
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
    `shared/data/cifar10-jpeg.tar.gz` in the working folder or any parent; and finally
    torchvision's download. `data="cifar10"` asks for the download directly. An argument or
    variable that names a missing path raises FileNotFoundError instead of looking further.
    """
    for name, value in (("the data argument", data), (f"${DATA_ENV}", os.environ.get(DATA_ENV))):
        if value is None or str(value) == "":
            continue
        if str(value) == "cifar10":
            return download_cifar10()
        path = Path(value).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{name} names a folder or archive that does not exist.\n"
                f"  missing: {path.resolve()}\n{HOW_TO_POINT}"
            )
        return load_image_folder(path)
    offline = find_offline_copy()
    if offline is not None:
        return load_image_folder(offline)
    try:
        return download_cifar10()
    except Exception as error:  # no network, blocked host, ...
        raise FileNotFoundError(
            "No CIFAR-10 images found. Looked at:\n"
            f"  - the data argument and ${DATA_ENV}: not set\n"
            f"  - {OFFLINE_COPY} in the working folder and its parents: not found\n"
            f"  - torchvision download: {type(error).__name__}: {error}\n{HOW_TO_POINT}"
        ) from error


def to_training_scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the scale the model trains on."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {images.dtype}")
    return images.float().div_(127.5).sub_(1.0)


def from_training_scale(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> float in [0, 1], for display and PSNR."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def training_variance(images: torch.Tensor) -> float:
    """Variance of all pixels of uint8 images, measured on the training scale [-1, 1].

    Exact: computed from the counts of the 256 byte values, each mapped with `to_training_scale`.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {images.dtype}")
    counts = torch.bincount(images.flatten(), minlength=256).double()  # (256,)
    byte_values = torch.arange(256, dtype=torch.uint8, device=images.device)
    values = to_training_scale(byte_values).double()  # (256,) in [-1, 1]
    share = counts / counts.sum()
    mean = (share * values).sum()
    return (share * (values - mean).square()).sum().item()


class ResidentBatches:
    """Endless shuffled batches sliced from a uint8 tensor that stays on `device`.

    Each epoch is one fresh random permutation of the images: no image appears twice within an
    epoch, and the len(images) % batch_size left over at its end (a different random few each
    epoch) wait for the next one. Batches are index slices, not a Python loop over files.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if not 0 < batch_size <= len(images):
            raise ValueError(f"batch_size must be between 1 and {len(images)}, got {batch_size}")
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
