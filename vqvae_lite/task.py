# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""What the training loop trains: a `Task` holds a model and its batches and computes the loss
of one batch; `StepOutput` is what that loss returns.

Chapter 6 (`notebooks/06_training.ipynb`) explains the hooks; its VQ-VAE task is in
`vqvae_lite.train`, chapter 8's prior is another task.
"""

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class StepOutput:
    """What a task's `loss` returns for one batch."""

    loss: Tensor  # the scalar to minimise
    logs: dict[str, Tensor]  # tensors summed over a log window (scalars, or counts)
    output: object = None  # anything `after_step` needs (the VQ-VAE: its VQVAEOutput)


class Task:
    """What the loop trains. A subclass sets `model`, `batches` (an endless iterator with
    `state_dict`, `load_state_dict` and `epoch`) and `identity` (plain data that a resumed run
    must match), and fills in `loss`; the other hooks are optional."""

    model: nn.Module
    batches: object
    identity: dict
    processes: int = 1  # processes that train it together, each on its own batch (appendix 11)
    main_process: bool = True  # the one of them that shows progress, prints and saves

    def loss(self, batch: Tensor) -> StepOutput:
        raise NotImplementedError

    def start(self) -> None:
        """Called once before the first step of a new run (not on resume)."""

    def after_step(self, step: StepOutput) -> dict[str, Tensor]:
        """Called after every optimiser step; returns more tensors to log."""
        return {}

    def summarize(self, sums: dict[str, Tensor], steps: int) -> dict[str, float]:
        """A history row from a window's sums: scalar means by default."""
        return {name: (value / steps).item() for name, value in sums.items() if value.dim() == 0}

    def evaluate(self) -> dict:
        """Metrics on held-out data, at `eval_every` and after the last step."""
        return {}

    def agree(self, elapsed_s: float, interrupted: bool) -> tuple[float, bool]:
        """The clock and the interrupt that every process acts on: one process keeps its own;
        several (appendix 11) agree, so that they stop and schedule at the same step."""
        return elapsed_s, interrupted
