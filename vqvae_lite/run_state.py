# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The state of a run: its task, optimiser, log window, step, time spent, history and test
metrics; its `state_dict` is the checkpoint.

Chapter 6 (`notebooks/06_training.ipynb`) explains what a checkpoint must hold for a resumed
run to match an uninterrupted one.
"""

from dataclasses import asdict, dataclass, field

import torch

from vqvae_lite.checkpoint import CheckpointError
from vqvae_lite.logs import LogWindow
from vqvae_lite.task import Task
from vqvae_lite.train_config import TrainConfig


@dataclass
class Run:
    """Everything that changes while a task trains; its `state_dict` is the checkpoint."""

    task: Task
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    window: LogWindow = field(default_factory=LogWindow)
    step: int = 0
    elapsed_s: float = 0.0  # training time, summed over resumed sessions
    history: list[dict] = field(default_factory=list)
    test: dict = field(default_factory=dict)
    first_loss: float | None = None  # the loss of step 1: a runaway loss is measured against it

    def state_dict(self) -> dict:
        """Identity, configuration, weights, optimiser, data order, random state, logs."""
        return dict(
            identity=self.task.identity,
            train_config=asdict(self.config),
            model=self.task.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            batches=self.task.batches.state_dict(),
            window=self.window.state_dict(),
            torch_rng=torch.get_rng_state(),
            step=self.step,
            elapsed_s=self.elapsed_s,
            history=self.history,
            test=self.test,
            first_loss=self.first_loss,
        )

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Continue from `state`; CheckpointError if its weights do not fit this run."""
        try:
            self.task.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"the checkpoint's weights do not fit: {error}") from error
        self.task.batches.load_state_dict(state["batches"])
        self.window.load_state_dict(state["window"], device)
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed_s = state["step"], state["elapsed_s"]
        self.history, self.test = state["history"], state["test"]
        self.first_loss = state.get("first_loss")  # None: set again by the next step
