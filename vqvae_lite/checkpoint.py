"""Checkpoints: written atomically, read back safely, checked against the run they continue.

Chapter 6 (`notebooks/06_training.ipynb`) saves one, loads it back and resumes training from it.
"""

import os
from pathlib import Path

import torch

from vqvae_lite.model import VQVAE, ModelConfig

FORMAT = "vqvae-lite checkpoint 1"
REQUIRED = ("format", "model_config", "train_config", "model", "step", "data_variance")


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
    """The fields (all, or only `keys`) whose values differ, as 'name: saved -> current' lines."""
    keys = sorted(set(saved) | set(current)) if keys is None else keys
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VQVAE, float]:
    """The trained model of a checkpoint, in eval mode on `device`, and its data variance."""
    state = load_checkpoint(path)
    model = VQVAE(ModelConfig(**state["model_config"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit its own model config: {error}") from error
    return model.to(device).eval(), state["data_variance"]
