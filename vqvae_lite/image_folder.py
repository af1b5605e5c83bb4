# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""The image-folder reader: `train/<class>/*` and `test/<class>/*` as uint8 tensors.

Chapter 0 (`notebooks/00_data.ipynb`) explains every function here. `vqvae_lite.data`
finds the folder (or unpacks an archive of one); `vqvae_lite.image_cache` keeps what this
decodes.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SPLITS = ("train", "test")
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


def _eight_bit(image: Image.Image) -> Image.Image:
    """Grayscale of more than 8 bits (modes I;16, I;16B, I, F) as 8-bit L.

    16-bit values keep their top byte (value >> 8). Modes I and F can hold any range:
    values up to 255 are taken as 8-bit, larger ones as 16-bit, F in [0, 1] as fractions.
    """
    values = np.asarray(image)  # (H, W) uint16, int32 or float32
    if image.mode == "F" and values.max(initial=0) <= 1:
        values = np.rint(values * 255)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = np.clip(values, 0, 65535).astype(np.uint16) >> 8
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))  # (H, W) mode L


def _rgb(image: Image.Image) -> Image.Image:
    """Any mode as RGB, turned upright by its EXIF tag; what is transparent is white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _eight_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return image.convert("RGB")


def decode_image(path: Path, size: int | None) -> tuple[np.ndarray, bool]:
    """One image file as (H, W, 3) uint8, fitted to `size` x `size` if given, and
    whether it had to be resized."""
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


def folder_inventory(folder: Path, name: str) -> tuple[list[str], list[Path]]:
    """What reading `folder` depends on, found without decoding: the cache key hashes it.

    The names (the classes, the entries the notes will name), and the image files.
    """
    classes, _ = _classes(folder, name)
    names, files = list(classes), []
    for split in SPLITS:
        found, others = _image_files(folder, split, classes)
        files += [path for path, _ in found]
        names += others
    return names, files


@dataclass
class _Tally:
    """What decoding found so far, across both splits."""

    planned: int  # image files in both splits, before any is read
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


def _common_side(files: list[tuple[Path, int]]) -> int:
    """The shorter side most of `files` have, read from their headers (no decoding)."""
    sides = Counter()
    for path, _ in files:
        try:
            with Image.open(path) as image:
                sides[min(image.size)] += 1
        except UNREADABLE:
            continue
    return sides.most_common(1)[0][0]


def _size_error(name: str, file: str, shape: tuple, tally: _Tally, files) -> DataError:
    """Other size than the first image's, no image_size: name both, suggest the usual."""
    first, (height, width, _) = tally.first
    if shape[:2] == (height, width):  # the first image's own size cannot be used
        problem = "the encoder needs a height and width that are multiples of 4"
    else:
        problem = f"{first} is {width}x{height}: the images have different sizes"
    common = _common_side(files)
    size = max(4, common // 4 * 4)
    return DataError(
        f"{name}: {file} is {shape[1]}x{shape[0]} pixels, but {problem}. Pass "
        f"image_size={size} (--image-size {size} on the command line; most images are "
        f"{common} pixels on their shorter side) to resize every image (its shorter "
        "side) and centre-crop it to that size."
    )


def check_memory(count: int, height: int, width: int, name: str) -> None:
    """Refuse, before allocating, `count` images of height x width larger than memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows has no os.sysconf
        return
    needed = count * 3 * height * width
    if needed <= memory:
        return
    fits = int((memory / 2 / (3 * count)) ** 0.5) // 4 * 4  # half: room left to train
    raise DataError(
        f"{name}: {count} images of {width}x{height} pixels need {needed / 2**30:.1f} "
        f"GiB as uint8, but this machine has {memory / 2**30:.1f} GiB of memory. Pass a "
        "smaller image_size (--image-size on the command line), e.g. "
        f"{max(4, fits)}."
    )


def _read_split(
    folder: Path, files: list, split: str, size: int | None, tally: _Tally, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's (path, label) `files` decoded: (N, 3, H, W) uint8 and (N,) labels."""
    if not files:
        raise FileNotFoundError(f"no images under {name}/{split}/<class>/")
    images, labels = None, []
    with tqdm(total=len(files), desc=f"decoding {split}", leave=False, delay=1) as bar:
        for path, label in files:
            bar.update()
            file = path.relative_to(folder).as_posix()
            try:
                pixels, resized = decode_image(path, size)
            except UNREADABLE as error:
                tally.unreadable.append(f"{file} ({_reason(error)})")
                continue
            height, width, _ = pixels.shape
            if tally.first is None:
                tally.first = (file, pixels.shape)
                check_memory(tally.planned, height, width, name)  # all of this size
            if pixels.shape != tally.first[1] or height % 4 or width % 4:
                raise _size_error(name, file, pixels.shape, tally, files)
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


def decode_folder(folder: Path, name: str, size: int | None) -> tuple[ImageSplits, int]:
    """Decode both splits of `folder`: the splits, and how many images were resized."""
    classes, notes = _classes(folder, name)
    listed = {split: _image_files(folder, split, classes) for split in SPLITS}
    tally = _Tally(planned=sum(len(files) for files, _ in listed.values()))
    tally.ignored = [entry for _, others in listed.values() for entry in others]
    if size is not None:  # the size is known before decoding: check the memory first
        check_memory(tally.planned, size, size, name)
    (train_files, _), (test_files, _) = listed["train"], listed["test"]
    train, train_labels = _read_split(folder, train_files, "train", size, tally, name)
    test, test_labels = _read_split(folder, test_files, "test", size, tally, name)
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
