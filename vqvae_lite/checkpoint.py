# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Checkpoints: a run's state written atomically, read back safely, checked on resume.

Chapter 6 (`notebooks/06_training.ipynb`) saves one, loads it back and resumes from it.
"""

import os
from pathlib import Path

import torch

FORMAT = "vqvae-lite checkpoint 2"
REQUIRED = ("format", "identity", "train_config", "model", "step")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not belong to the run that asked for it."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` to `path` atomically: a temporary file beside it, synced, then renamed.

    A crash mid-write leaves the previous checkpoint untouched, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as file:
            torch.save({"format": FORMAT, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with `torch.load(weights_only=True)`: tensors and plain data only.

    Raises CheckpointError, and changes nothing on disk, if the file is missing, truncated,
    corrupt or not a vqvae-lite checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return state


def config_differences(saved: dict, current: dict, keys: list[str] | None = None) -> list[str]:
    """The fields (all, or only `keys`) whose values differ, as 'name: saved -> current';
    nested dicts (a model configuration inside an identity) are compared field by field."""
    keys = sorted(set(saved) | set(current)) if keys is None else keys
    differences = []
    for key in keys:
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += [f"{key}.{d}" for d in config_differences(old, new)]
        elif old != new:
            differences.append(f"{key}: {old!r} -> {new!r}")
    return differences


def check_resumable(state: dict, identity: dict, train_config: dict, same_run: list[str]):
    """Raise CheckpointError unless the checkpoint has this identity (model, data) and, among
    the training settings, the same values for every field named in `same_run`."""
    differences = config_differences(state["identity"], identity)
    differences += config_differences(state["train_config"], train_config, same_run)
    if differences:
        raise CheckpointError(
            "the checkpoint belongs to another run; these settings differ (saved -> now):\n  "
            + "\n  ".join(differences)
        )
