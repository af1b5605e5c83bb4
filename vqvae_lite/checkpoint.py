# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Checkpoints: the state of a run, written atomically, read back safely, checked on resume.

Chapter 6 (`notebooks/06_training.ipynb`) saves one, loads it back and resumes training from it.
"""

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqvae_lite.data import ResidentBatches
from vqvae_lite.metrics import LogWindow
from vqvae_lite.model import VQVAE, ModelConfig

FORMAT = "vqvae-lite checkpoint 1"
REQUIRED = ("format", "model_config", "train_config", "model", "step", "data_variance")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not belong to the run that asked for it."""


@dataclass
class Run:
    """A training run: the objects that change while it trains. A checkpoint is its state_dict."""

    model_config: ModelConfig
    config: Any  # the TrainConfig of vqvae_lite.train
    model: VQVAE
    optimizer: torch.optim.Optimizer
    batches: ResidentBatches
    data_variance: float
    restarts: torch.Generator  # draws the encoder outputs that restarted codes move to
    unused_for: Tensor  # (K,) steps since each code was last picked
    window: LogWindow  # sums since the last history row
    step: int = 0
    elapsed_s: float = 0.0  # training time, summed over resumed sessions
    history: list[dict] = field(default_factory=list)
    test: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        """Configs, weights, optimiser, step, random states and data variance: plain data."""
        return dict(
            model_config=asdict(self.model_config),
            train_config=asdict(self.config),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            batches=self.batches.state_dict(),
            data_variance=self.data_variance,
            restarts=self.restarts.get_state(),
            unused_for=self.unused_for.cpu(),
            window=self.window.state_dict(),
            torch_rng=torch.get_rng_state(),
            step=self.step,
            elapsed_s=self.elapsed_s,
            history=self.history,
            test=self.test,
        )

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; CheckpointError if its weights do not fit this run."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"the checkpoint's weights do not fit: {error}") from error
        self.batches.load_state_dict(state["batches"])
        self.restarts.set_state(state["restarts"])
        self.unused_for.copy_(state["unused_for"])
        self.window.load_state_dict(state["window"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed_s = state["step"], state["elapsed_s"]
        self.history, self.test = state["history"], state["test"]


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
    """The fields (all, or only `keys`) whose values differ, as 'name: saved -> current'."""
    keys = sorted(set(saved) | set(current)) if keys is None else keys
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]


def check_resumable(state: dict, model_config: dict, train_config: dict, same_run: list[str]):
    """Raise CheckpointError unless the checkpoint has this model config and, among the
    training settings, the same values for every field named in `same_run`."""
    differences = config_differences(state["model_config"], model_config)
    differences += config_differences(state["train_config"], train_config, same_run)
    if differences:
        raise CheckpointError(
            "the checkpoint belongs to another run; these settings differ (saved -> now):\n  "
            + "\n  ".join(differences)
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VQVAE, float]:
    """The trained model of a checkpoint (eval mode, channels-last as in training) and its data
    variance."""
    state = load_checkpoint(path)
    model = VQVAE(ModelConfig(**state["model_config"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit its own model config: {error}") from error
    return model.to(device, memory_format=torch.channels_last).eval(), state["data_variance"]
