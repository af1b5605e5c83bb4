# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""A run's folder: checked and locked before the first step, its checkpoint loaded and checked
on resume, written only while the state is finite, and what is on disk said in every message.

Chapter 6 (`notebooks/06_training.ipynb`) explains it; the appendix "Training for real" shows
the lock at work.
"""

from dataclasses import asdict
from pathlib import Path

from vqvae_lite.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    check_resumable,
    claim_folder,
    load_checkpoint,
    save_checkpoint,
)
from vqvae_lite.divergence import NonFiniteLossError, divergence, weights_are_finite
from vqvae_lite.run_state import Run
from vqvae_lite.train_config import TrainConfig

SAME_RUN = ["batch_size", "warmup_steps", "seed"]  # a resume must keep these
MAY_LOWER = ["learning_rate"]  # a resume may lower these, never raise them


class Checkpoints:
    """Where a run is saved, as a context manager: the folder is checked and locked before the
    first step and unlocked at the end; a new run refuses to overwrite a finished one; a resumed
    run loads the checkpoint; only finite states are written."""

    def __init__(self, out: str | Path | None, resume: bool, write: bool = True):
        self.path = None if out is None else Path(out) / CHECKPOINT
        self.write = write  # False: check and load, but leave the writing to another process
        if resume and self.path is None:
            raise ValueError("resume=True needs the `out` folder that holds the checkpoint")
        owner = self.path is not None and write  # the writing process locks the folder
        self.lock = claim_folder(self.path.parent) if owner else None
        try:
            if not resume and self.path is not None and self.path.exists():
                raise FileExistsError(f"{self.path} exists: resume it, or choose another folder")
            self.saved = load_checkpoint(self.path) if resume else None
        except BaseException:
            self.__exit__()
            raise
        self.last_step = self.saved["step"] if self.saved else None

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exception) -> None:
        if self.lock is not None:  # closing the lock file unlocks the folder
            self.lock.close()
            self.lock = None

    def check(self, identity: dict, config: TrainConfig) -> list[str]:
        """CheckpointError unless the saved run is this task with the same arithmetic, or a
        lower learning rate; returns the settings lowered, as 'name: saved -> now'."""
        if self.saved is None:
            return []
        return check_resumable(self.saved, identity, asdict(config), SAME_RUN, MAY_LOWER)

    def save(self, run: Run) -> None:
        """Write the run atomically, unless its weights or Adam's moments went NaN or inf.
        CheckpointError if the file cannot be written, saying which step and what is kept."""
        if self.path is None:
            return
        if not weights_are_finite(run):
            what = f"the weights or Adam's moments became NaN or inf by step {run.step}"
            raise self.error_for_divergence(what, run.config)
        if self.write:
            try:
                save_checkpoint(self.path, run.state_dict())
            except CheckpointError as error:
                raise CheckpointError(
                    f"step {run.step} could not be saved: {error}; {self.kept()}"
                ) from error
        self.last_step = run.step

    def kept(self) -> str:
        """What is on disk now, for a message."""
        if self.path is None:
            return "nothing was saved (no `out` folder)"
        if self.last_step is None:
            return f"no checkpoint was written to {self.path.parent}"
        return f"the last good checkpoint (step {self.last_step}) is kept in {self.path}"

    def error_for_divergence(self, what: str, config: TrainConfig) -> NonFiniteLossError:
        """The error for a run that diverged: what happened, what is kept, what to try."""
        return divergence(what, self.kept(), config, resumable=self.last_step is not None)
