# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""The cache of decoded images: a key made from the images' bytes, checked files, a lock.

Chapter 0 (`notebooks/00_data.ipynb`) explains every function here.
"""

import hashlib
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from vqvae_lite.image_folder import DataWarning, ImageSplits
from vqvae_lite.safe_files import load_under_key, save_under_key

try:
    import fcntl  # file locks on Linux and macOS
except ImportError:  # Windows
    fcntl = None

CACHE_ENV = "VQVAE_LITE_CACHE"  # where decoded tensors and downloads are kept
CACHE_FORMAT = 3  # part of every cache key: a new layout never reads an old file


def cache_dir() -> Path:
    """The folder for decoded tensors and downloads: $VQVAE_LITE_CACHE or ~/.cache."""
    default = Path.home() / ".cache" / "vqvae-lite"
    path = Path(os.environ.get(CACHE_ENV, default)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes; '-' for one that cannot be read (the reader skips it)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return "-"
    return digest.hexdigest()


def cache_key(root: Path, names: list[str], files: list[Path]) -> str:
    """A key that changes whenever the decoded images could: it hashes every file's bytes.

    `names` are what else the result depends on (classes, entries the notes name); `files`
    are read in full, so an edit that keeps a file's size and time still changes the key.
    """
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{root.resolve()}".encode())
    for name in names:
        digest.update(f"\n{name}".encode())
    for path in files:
        file = path.relative_to(root).as_posix()
        digest.update(f"\n{file}|{_file_digest(path)}".encode())
    return digest.hexdigest()[:16]


def _checksum(splits: ImageSplits) -> str:
    """sha256 of every tensor's shape and bytes, and of the names and notes."""
    digest = hashlib.sha256()
    for tensor in (splits.train, splits.test, splits.train_labels, splits.test_labels):
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.contiguous().numpy())  # the raw bytes, without a copy
    digest.update(json.dumps([splits.classes, splits.source, splits.notes]).encode())
    return digest.hexdigest()


def read_cache(path: Path) -> ImageSplits | None:
    """The cached splits; None if there is no file or it is damaged (with a warning)."""
    if not path.is_file():
        return None
    saved = load_under_key(path, path.stem)  # the key is the file's own name
    try:
        splits = ImageSplits(**saved["splits"])
        if saved["sha256"] == _checksum(splits):
            return splits
        problem = "its checksum does not match its contents"
    except (TypeError, KeyError):  # None: cut short, overwritten, not a torch file, ...
        problem = "it does not load as a cache file"
    warnings.warn(
        f"the cache file {path} is damaged ({problem}); decoding the images again",
        DataWarning,
        stacklevel=3,
    )
    return None


def write_cache(path: Path, splits: ImageSplits) -> None:
    """Save `splits` and their checksum atomically; if that fails, warn and go on."""
    saved = {"sha256": _checksum(splits), "splits": vars(splits)}
    try:
        save_under_key(path, path.stem, saved)
    except Exception as error:  # a full disk (torch: RuntimeError), a read-only folder
        message = f"could not save the cache file {path}: {error}"
        warnings.warn(message, DataWarning, stacklevel=3)


@contextmanager
def decoding_lock(path: Path):
    """Hold the lock file `path` while decoding; yields whether another process held it.

    A process that finds the lock taken says so once and waits: the other one is decoding
    the same images into the cache, which the waiting one then reads. Where there are no
    file locks (Windows), nothing is locked.
    """
    if fcntl is None:
        yield False
        return
    with open(path, "a") as lock:  # closing the file releases the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            waiting = "waiting for another process decoding the images into the cache"
            print(f"{waiting} {path.parent}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
            waited = True
        yield waited
