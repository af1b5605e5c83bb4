# Generated from notebooks/00_data.ipynb by tools/export.py: edit the notebook.
"""Files never seen half-written: write a temporary file, then rename it into place.

Chapter 0 (`notebooks/00_data.ipynb`) explains it. The image cache, the checkpoints and
the prior's cache of codes all save through it.
"""

import glob
import os
from pathlib import Path

import torch


def save_atomically(contents, path) -> None:
    """torch.save `contents` to `path`, which is always either the old file or the new.

    The bytes go to `.{name}.{pid}.partial` beside `path`, are forced to the disk (fsync),
    and the file is renamed onto `path`. On any failure, a full disk included, the partial
    file is removed and the error raised again, `path` untouched. After a success, the
    partial files of earlier writes that were killed half-way are removed too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as file:
            torch.save(contents, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        leftover.unlink(missing_ok=True)


def save_under_key(path, key: str, value) -> None:
    """Save `value` atomically under `key`: a reader asking for another key gets None."""
    save_atomically({"key": key, "value": value}, path)


def load_under_key(path, key: str):
    """The value saved in `path` under `key`, with its tensors on the CPU.

    None when the file is missing, cannot be read (cut short, damaged, not a torch
    file) or was saved under another key.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, cut short, overwritten, not a torch file, ...
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    return saved.get("value")
