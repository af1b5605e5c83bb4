# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The training logs: running sums of what a task logs, kept on the device between history
rows, and a history row or a dict of metrics as one line of text.

Chapter 6 (`notebooks/06_training.ipynb`) explains them.
"""

import time

import torch
from torch import Tensor


class LogWindow:
    """Sums of the logged tensors since the last history row, kept on the training device."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.steps, self.started = 0, time.perf_counter()

    def add(self, logs: dict[str, Tensor]) -> None:
        for name, value in logs.items():
            value = value.detach()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    def images_per_s(self, batch_size: int) -> float:
        return self.steps * batch_size / (time.perf_counter() - self.started)

    def state_dict(self) -> dict:
        """The sums so far, so that a resumed run logs the same rows."""
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "steps": self.steps}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.steps = state["steps"]


def scalars(metrics: dict) -> dict:
    """The plain numbers of a dict of metrics (tensors such as code counts left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def format_row(row: dict) -> str:
    """One line for a history row (or metrics): every number, the step first."""
    skip = {"epoch", "elapsed_s", "test"}
    parts = [f"step {row['step']:>6}"] if "step" in row else []
    for name, value in scalars(row).items():
        if name not in skip | {"step"}:
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
    return " | ".join(parts)
