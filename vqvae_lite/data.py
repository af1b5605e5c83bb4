# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""CIFAR-10, or any folder of class sub-folders, as uint8 tensors for training.

Chapter 0 (`notebooks/00_data.ipynb`) explains every function here.
"""

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

DATA_ENV = "VQVAE_LITE_DATA"  # the images: a folder, an archive or "cifar10"
CACHE_ENV = "VQVAE_LITE_CACHE"  # where decoded tensors and downloads are kept
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
OFFLINE_COPY = Path("shared") / "data" / "cifar10-jpeg.tar.gz"
HOW_TO_POINT = (
    f"Point data=... or ${DATA_ENV} at an image folder (train/<class>/*.jpg and "
    "test/<class>/*.jpg) or a .tar.gz of one, or pass data='cifar10' to download "
    "CIFAR-10."
)
CACHE_FORMAT = 2  # part of every cache key: a new layout never reads an old file
NAMES_SHOWN = 5  # a message names this many files, then says how many more


class DataError(ValueError):
    """Images, an archive or an option the loader cannot use; the message says which."""


class DataWarning(UserWarning):
    """Something the loader did to the images on the way: resized, skipped, left out."""


@dataclass
class ImageSplits:
    """Train and test images as uint8 tensors of shape (N, 3, H, W), with labels."""

    train: torch.Tensor  # (N_train, 3, H, W) uint8
    test: torch.Tensor  # (N_test, 3, H, W) uint8
    train_labels: torch.Tensor  # (N_train,) int64
    test_labels: torch.Tensor  # (N_test,) int64
    classes: list[str]
    source: str  # a short, machine-independent name of where the images came from
    notes: list[str] = field(default_factory=list)  # what the loader did to the images


def cache_dir() -> Path:
    """The folder for decoded tensors and downloads: $VQVAE_LITE_CACHE or ~/.cache."""
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


def check_image_size(image_size: int | None) -> None:
    """Refuse a size the model cannot take: the encoder halves height and width twice.

    Called before any file is read.
    """
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise DataError(f"image_size must be a number of pixels, got {image_size!r}")
    if image_size < 4 or image_size % 4:
        raise DataError(
            "image_size must be a multiple of 4 and at least 4 (the encoder halves "
            f"height and width twice), got {image_size}"
        )


def _rgb(image: Image.Image) -> Image.Image:
    """Any mode as RGB, turned upright by its EXIF tag; what is transparent is white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return image.convert("RGB")


def _decode(path: Path, size: int | None) -> tuple[np.ndarray, bool]:
    """One image file as (H, W, 3) uint8, fitted to `size` x `size` if given.

    Returns the pixels and whether the image had to be resized.
    """
    with Image.open(path) as image:
        resized = size is not None and image.size != (size, size)
        if resized:
            image.draft(None, (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
        image = _rgb(image)
    if resized:
        image = ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)
    return np.asarray(image), resized


def _visible(folder: Path) -> list[Path]:
    """The entries of `folder`, sorted, without hidden ones (.DS_Store, ...)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _names(items: list[str]) -> str:
    """The first few items, then how many more: 'a, b, c and 4 more'."""
    shown, more = ", ".join(items[:NAMES_SHOWN]), len(items) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _classes(folder: Path, name: str) -> tuple[list[str], list[str]]:
    """The class names, from train/, and a note if test/ lacks some of them."""
    train = [p.name for p in _visible(folder / "train") if p.is_dir()]
    test = [p.name for p in _visible(folder / "test") if p.is_dir()]
    if not train:
        raise FileNotFoundError(f"no images under {name}/train/<class>/")
    if extra := sorted(set(test) - set(train)):
        raise DataError(
            f"{name}: test/ has classes that train/ lacks: {', '.join(extra)}. The "
            "classes (and labels) come from train/<class>/: add these folders to "
            "train/ or move them out of test/."
        )
    missing = [c for c in train if c not in test]
    if not missing:
        return train, []
    return train, [f"test/ has no images of {len(missing)} classes: {_names(missing)}"]


def _image_files(folder: Path, split: str, classes: list[str]):
    """(path, label) of each image file in `folder/split/<class>/`, and other entries.

    The other entries (files of other kinds, sub-folders, loose files) go into a note.
    """
    files, others = [], []
    for label, name in enumerate(classes):
        if (folder / split / name).is_dir():
            for path in _visible(folder / split / name):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((path, label))
                else:
                    others.append(path)
    others += [p for p in _visible(folder / split) if p.name not in classes]
    return files, [p.relative_to(folder).as_posix() for p in others]


@dataclass
class _Tally:
    """What decoding found so far, across both splits."""

    first: tuple[str, tuple[int, ...]] | None = None  # first image read, and its shape
    read: int = 0
    resized: int = 0
    unreadable: list[str] = field(default_factory=list)  # "train/cat/x.png (reason)"
    ignored: list[str] = field(default_factory=list)  # entries that are not image files


# What Pillow raises for a file it cannot decode: not an image, cut short, huge, ...
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _reason(error: Exception) -> str:
    """Why a file could not be read, in a few words and without its full path."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _size_error(name: str, file: str, shape: tuple, tally: _Tally) -> DataError:
    """Another size than the first image's, and no image_size: name both files."""
    first, (height, width, _) = tally.first
    if shape[:2] == (height, width):  # the first image's own size cannot be used
        problem = "the encoder needs a height and width that are multiples of 4"
    else:
        problem = f"{first} is {width}x{height}: the images have different sizes"
    size = max(4, min(shape[:2]) // 4 * 4)
    return DataError(
        f"{name}: {file} is {shape[1]}x{shape[0]} pixels, but {problem}. Pass "
        f"image_size={size} (--image-size {size} on the command line) to resize every "
        "image (its shorter side) and centre-crop it to that size."
    )


def _read_split(
    folder: Path, split: str, classes: list, size: int | None, tally: _Tally, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode `folder/split/<class>/*` into (N, 3, H, W) uint8 and (N,) labels."""
    files, ignored = _image_files(folder, split, classes)
    tally.ignored += ignored
    if not files:
        raise FileNotFoundError(f"no images under {name}/{split}/<class>/")
    images, labels = None, []
    with tqdm(total=len(files), desc=f"decoding {split}", leave=False, delay=1) as bar:
        for path, label in files:
            bar.update()
            file = path.relative_to(folder).as_posix()
            try:
                pixels, resized = _decode(path, size)
            except UNREADABLE as error:
                tally.unreadable.append(f"{file} ({_reason(error)})")
                continue
            if tally.first is None:
                tally.first = (file, pixels.shape)
            height, width, _ = pixels.shape
            if pixels.shape != tally.first[1] or height % 4 or width % 4:
                raise _size_error(name, file, pixels.shape, tally)
            if images is None:
                images = np.empty((len(files), *pixels.shape), dtype=np.uint8)
            images[len(labels)] = pixels  # (H, W, 3) into (N, H, W, 3)
            labels.append(label)
            tally.resized += resized
    if images is None:
        raise DataError(
            f"{name}: none of the {len(files)} image files in {split}/ could be read: "
            f"{_names(tally.unreadable[-len(files) :])}"
        )
    tally.read += len(labels)
    images = torch.from_numpy(images[: len(labels)]).permute(0, 3, 1, 2)  # (N, 3, H, W)
    return images.contiguous(), torch.tensor(labels, dtype=torch.int64)


def _decode_all(folder: Path, name: str, size: int | None) -> tuple[ImageSplits, int]:
    """Decode both splits of `folder`: the splits, and how many images were resized."""
    classes, notes = _classes(folder, name)
    tally = _Tally()
    train, train_labels = _read_split(folder, "train", classes, size, tally, name)
    test, test_labels = _read_split(folder, "test", classes, size, tally, name)
    if tally.resized:
        notes.append(
            f"resized {tally.resized} of {tally.read} images to {size}x{size} "
            "(shorter side to the size, then the centre square)"
        )
    if tally.unreadable:
        notes.append(
            f"skipped {len(tally.unreadable)} file(s) that could not be read: "
            f"{_names(tally.unreadable)}"
        )
    if tally.ignored:
        notes.append(
            f"left out {len(tally.ignored)} entries that are not image files "
            f"({' '.join(IMAGE_SUFFIXES)}): {_names(tally.ignored)}"
        )
    notes = [f"{name}: {note}" for note in notes]
    splits = ImageSplits(train, test, train_labels, test_labels, classes, name, notes)
    return splits, tally.resized


def _stamp(path: Path) -> str:
    """A file's size and modification time in nanoseconds, as 'size|time'."""
    try:
        stat = path.stat()
    except OSError:  # a broken link, which the reader leaves out too
        return "-"
    return f"{stat.st_size}|{stat.st_mtime_ns}"


def _cache_key(root: Path) -> str:
    """A key that changes when any image could have: each file's path, size and time.

    Hidden entries are left out, as the reader leaves them out.
    """
    entries = [f"{CACHE_FORMAT}|{root.resolve()}"]
    if root.is_file():
        entries.append(_stamp(root))
    for folder, dirs, files in os.walk(root, followlinks=True):  # nothing for a file
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = Path(folder).relative_to(root)
        entries += [f"{here / d}/" for d in dirs]
        files = [f for f in files if not f.startswith(".")]
        entries += [f"{here / f}|{_stamp(Path(folder, f))}" for f in files]
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:16]


def _checksum(splits: ImageSplits) -> str:
    """sha256 of every tensor's shape and bytes, and of the names and notes."""
    digest = hashlib.sha256()
    for tensor in (splits.train, splits.test, splits.train_labels, splits.test_labels):
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.contiguous().numpy())  # the raw bytes, without a copy
    digest.update(json.dumps([splits.classes, splits.source, splits.notes]).encode())
    return digest.hexdigest()


def _read_cache(path: Path) -> ImageSplits | None:
    """The cached splits; None if there is no file or it is damaged (with a warning)."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        splits = ImageSplits(**saved["splits"])
        if saved["sha256"] == _checksum(splits):
            return splits
        problem = "its checksum does not match its contents"
    except Exception as error:  # cut short, overwritten, not a torch file, ...
        problem = f"{type(error).__name__}: {_reason(error)}"
    warnings.warn(
        f"the cache file {path} is damaged ({problem}); decoding the images again",
        DataWarning,
        stacklevel=3,
    )
    return None


def _write_cache(path: Path, splits: ImageSplits) -> None:
    """Save `splits` and their checksum atomically: a temporary file, then a rename."""
    saved = {"sha256": _checksum(splits), "splits": vars(splits)}
    handle, partial = tempfile.mkstemp(".partial", f"{path.name}.", path.parent)
    os.close(handle)
    try:
        torch.save(saved, partial)
        os.replace(partial, path)
    except OSError as error:  # a full disk, a read-only cache folder, ...
        Path(partial).unlink(missing_ok=True)
        message = f"could not save the cache file {path}: {error}"
        warnings.warn(message, DataWarning, stacklevel=3)


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


def _dataset_folder(folder: Path, name: str) -> Path:
    """`folder`, or its only sub-folder, whichever holds train/ and test/."""
    tops = [p for p in _visible(folder) if p.is_dir()]
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


def load_image_folder(root: str | Path, image_size: int | None = None) -> ImageSplits:
    """Read `root/train/<class>/*` and `root/test/<class>/*`, or a .tar.gz holding them.

    The classes come from train/; a class in test/ that train/ lacks is a DataError.
    With `image_size`, an image of another size is resized (shorter side) and
    centre-cropped; without it, all images must share one size. Unreadable files are
    skipped. `notes` says what was resized, skipped or left out, and each note is also
    given as a DataWarning. The tensors are cached in `cache_dir()`, under a key that
    changes when any file does.
    """
    check_image_size(image_size)
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    key = _cache_key(root)
    as_they_are = cache_dir() / f"images-{key}.pt"  # at their own, common size
    fitted = cache_dir() / f"images-{key}-{image_size}px.pt"  # resized to image_size
    for path in (fitted, as_they_are) if image_size else (as_they_are,):
        splits = _read_cache(path)
        size = None if splits is None else tuple(splits.train.shape[-2:])
        if size is not None and (image_size is None or size == (image_size,) * 2):
            return _warned(splits)
    folder = _dataset_folder(_extract(root, key) if root.is_file() else root, root.name)
    splits, count = _decode_all(folder, root.name, image_size)
    _write_cache(fitted if count else as_they_are, splits)
    return _warned(splits)


def download_cifar10(image_size: int | None = None) -> ImageSplits:
    """Download CIFAR-10 with torchvision into `cache_dir()`, as uint8 tensors."""
    from torchvision.datasets import CIFAR10

    check_image_size(image_size)
    root = cache_dir() / "torchvision"
    train = CIFAR10(root, train=True, download=True)
    test = CIFAR10(root, train=False, download=True)
    resize = image_size not in (None, 32)

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
