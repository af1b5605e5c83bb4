# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""Finding the images: CIFAR-10 (an offline copy, or torchvision's download) or your own.

Chapter 0 (`notebooks/00_data.ipynb`) explains every function here. A folder of images is
read by `vqvae_lite.image_folder` and cached by `vqvae_lite.image_cache`.
"""

import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqvae_lite.image_cache import (
    cache_dir,
    cache_key,
    decoding_lock,
    read_cache,
    write_cache,
)
from vqvae_lite.image_folder import (
    DataError,
    DataWarning,
    ImageSplits,
    check_image_size,
    check_memory,
    decode_folder,
    folder_inventory,
)

DATA_ENV = "VQVAE_LITE_DATA"  # the images: a folder, an archive or "cifar10"
OFFLINE_COPY = Path("shared") / "data" / "cifar10-jpeg.tar.gz"
HOW_TO_POINT = (
    f"Point data=... or ${DATA_ENV} at an image folder (train/<class>/*.jpg and "
    "test/<class>/*.jpg) or a .tar.gz of one, or pass data='cifar10' to download "
    "CIFAR-10."
)


def find_offline_copy(start: Path | None = None) -> Path | None:
    """Look for `shared/data/cifar10-jpeg.tar.gz` in `start` and each of its parents."""
    start = Path.cwd() if start is None else Path(start)
    for folder in [start, *start.resolve().parents]:
        candidate = folder / OFFLINE_COPY
        if candidate.is_file():
            return candidate
    return None


def _unpack_error(archive: Path, error: Exception) -> DataError:
    if isinstance(error, EOFError):
        reason = "it ends too early (cut short, e.g. by an unfinished download)"
    elif isinstance(error, tarfile.ReadError):
        reason = "it is not a .tar or .tar.gz archive, or it is damaged"
    else:
        reason = f"{type(error).__name__}: {error}"
    return DataError(f"{archive} cannot be unpacked: {reason}.\n{HOW_TO_POINT}")


def _extract(archive: Path, key: str) -> Path:
    """Unpack `archive` into `cache_dir()` once; safe if two processes do it at once."""
    target = cache_dir() / f"extracted-{key}"
    if target.is_dir():
        return target
    partial = Path(tempfile.mkdtemp(".partial", f"{target.name}.", cache_dir()))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        if not any(partial.iterdir()):
            raise DataError(f"{archive} is an empty archive.\n{HOW_TO_POINT}")
        os.rename(partial, target)  # atomic; fails if another process got there first
    except BaseException as error:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, OSError) and target.is_dir():
            return target  # the other process's copy
        if isinstance(error, (tarfile.TarError, EOFError, OSError, zlib.error)):
            raise _unpack_error(archive, error) from error
        raise
    return target


ORDER_SEED = 2017  # fixes the order: the same on every run and every machine


def fair_order(labels: torch.Tensor, seed: int = ORDER_SEED) -> torch.Tensor:
    """A fixed random permutation of range(len(labels)) whose every prefix holds each class
    in proportion (to within one image): (N,) int64 labels -> (N,) int64 positions."""
    generator = torch.Generator().manual_seed(seed)
    count = len(labels)
    shuffled = torch.randperm(count, generator=generator)  # (N,)
    by_class = shuffled[torch.argsort(labels[shuffled], stable=True)]  # (N,) classes in runs
    sizes = torch.bincount(labels)  # (C,) images per class
    starts = torch.cumsum(sizes, 0) - sizes  # (C,) where each class's run begins
    rank = torch.empty(count, dtype=torch.int64)
    rank[by_class] = torch.arange(count) - starts[labels[by_class]]  # (N,) 0..n_c-1 in class
    jitter = torch.rand(count, generator=generator, dtype=torch.float64)  # (N,) in [0, 1)
    key = (rank + jitter) / sizes[labels]  # (N,) in [0, 1): class c's i-th at i / n_c
    return torch.argsort(key)


def in_fair_order(splits: ImageSplits) -> ImageSplits:
    """`splits` with each split's images and labels put into `fair_order`."""
    train, test = fair_order(splits.train_labels), fair_order(splits.test_labels)
    return replace(
        splits,
        train=splits.train[train],
        test=splits.test[test],
        train_labels=splits.train_labels[train],
        test_labels=splits.test_labels[test],
    )


def _dataset_folder(folder: Path, name: str) -> Path:
    """`folder`, or its only sub-folder, whichever holds train/ and test/."""
    tops = [p for p in sorted(folder.iterdir()) if p.is_dir() and p.name[0] != "."]
    if not (folder / "train").is_dir() and len(tops) == 1:
        folder = tops[0]
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"{name} has no {split}/ folder of class folders")
    return folder


def _warned(splits: ImageSplits) -> ImageSplits:
    """Give each note as a DataWarning, and return `splits`."""
    for note in splits.notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return splits


def _cached(paths: tuple[Path, ...], image_size: int | None) -> ImageSplits | None:
    """The splits of the first cache file in `paths` that holds the size asked for."""
    for path in paths:
        splits = read_cache(path)
        size = None if splits is None else tuple(splits.train.shape[-2:])
        if size is not None and (image_size is None or size == (image_size,) * 2):
            return splits
    return None


def load_image_folder(root: str | Path, image_size: int | None = None) -> ImageSplits:
    """Read `root/train/<class>/*` and `root/test/<class>/*`, or a .tar.gz holding them.

    The classes come from train/; a class in test/ that train/ lacks is a DataError.
    With `image_size`, an image of another size is resized (shorter side) and
    centre-cropped; without it, all images must share one size. Unreadable files are
    skipped. `notes` says what was resized, skipped or left out, and each note is also
    given as a DataWarning. Each split comes in `fair_order`, so that any prefix is a
    fair sample. The tensors are cached in `cache_dir()`, under a key made from the
    bytes of every image file, so that any edit is seen. Processes that start on the
    same images at once decode them once: the others wait, then read the cache.
    """
    check_image_size(image_size)
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_file():  # an archive: the key hashes its bytes
        folder, key = None, cache_key(root, [], [root])
    else:
        folder = _dataset_folder(root, root.name)
        key = cache_key(root, *folder_inventory(folder, root.name))
    as_they_are = cache_dir() / f"images-{key}.pt"  # at their own, common size
    fitted = cache_dir() / f"images-{key}-{image_size}px.pt"  # resized to image_size
    paths = (fitted, as_they_are) if image_size else (as_they_are,)
    if (splits := _cached(paths, image_size)) is None:
        with decoding_lock(cache_dir() / f"images-{key}.lock") as waited:
            # after a wait, the process waited for has just written the cache
            if not waited or (splits := _cached(paths, image_size)) is None:
                folder = folder or _dataset_folder(_extract(root, key), root.name)
                splits, count = decode_folder(folder, root.name, image_size)
                write_cache(fitted if count else as_they_are, splits)
    return _warned(in_fair_order(splits))


def download_cifar10(image_size: int | None = None) -> ImageSplits:
    """Download CIFAR-10 with torchvision into `cache_dir()`, as uint8 tensors."""
    from torchvision.datasets import CIFAR10

    check_image_size(image_size)
    root = cache_dir() / "torchvision"
    train = CIFAR10(root, train=True, download=True)
    test = CIFAR10(root, train=False, download=True)
    resize = image_size not in (None, 32)
    if resize:
        check_memory(len(train.data) + len(test.data), image_size, image_size, "cifar10")

    def to_tensor(array: np.ndarray) -> torch.Tensor:  # (N, 32, 32, 3) -> (N, 3, S, S)
        if resize:
            fit = (image_size, image_size)
            images = [Image.fromarray(pixels) for pixels in array]
            array = np.stack([np.asarray(i.resize(fit, Image.LANCZOS)) for i in images])
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()

    notes = [f"resized all 60000 images to {image_size}x{image_size}"] if resize else []
    return _warned(
        ImageSplits(
            to_tensor(train.data),
            to_tensor(test.data),
            torch.tensor(train.targets),
            torch.tensor(test.targets),
            list(train.classes),
            source="cifar10 (torchvision)",
            notes=notes,
        )
    )


def load_cifar10(
    data: str | Path | None = None,
    image_size: int | None = None,
) -> ImageSplits:
    """Find CIFAR-10 and return it as uint8 tensors. Never falls back to fake data.

    Looks, in order, at: the `data` argument; the environment variable
    `VQVAE_LITE_DATA`; `shared/data/cifar10-jpeg.tar.gz` in the working folder or any
    parent; and finally torchvision's download. `data="cifar10"` asks for the download
    directly. An argument or variable that names a missing path raises FileNotFoundError
    instead of looking further. `image_size` is as in `load_image_folder` (None keeps
    CIFAR-10's 32 pixels); a size the model cannot take is refused before anything else.
    """
    check_image_size(image_size)
    named = (("the data argument", data), (f"${DATA_ENV}", os.environ.get(DATA_ENV)))
    for name, value in named:
        if value is None or str(value) == "":
            continue
        if str(value) == "cifar10":
            return download_cifar10(image_size)
        path = Path(value).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{name} names a folder or archive that does not exist.\n"
                f"  missing: {path.resolve()}\n{HOW_TO_POINT}"
            )
        return load_image_folder(path, image_size)
    offline = find_offline_copy()
    if offline is not None:
        return load_image_folder(offline, image_size)
    try:
        return download_cifar10(image_size)
    except Exception as error:  # no network, blocked host, ...
        raise FileNotFoundError(
            "No CIFAR-10 images found. Looked at:\n"
            f"  - the data argument and ${DATA_ENV}: not set\n"
            f"  - {OFFLINE_COPY} in the working folder and its parents: not found\n"
            f"  - torchvision download: {type(error).__name__}: {error}\n{HOW_TO_POINT}"
        ) from error
