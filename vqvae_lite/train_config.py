# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""How to train: the configuration of a run, checked when it is made, and its learning-rate
schedule.

Chapter 6 (`notebooks/06_training.ipynb`) explains both; the loop of `vqvae_lite.loop` follows
them.
"""

import math
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, device, logging and checkpoints (chapter 6)."""

    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 2e-3  # peak Adam step size, reached after the warmup
    warmup_steps: int = 100  # linear warmup, then cosine decay to zero at the last step
    seed: int = 0
    device: str = "auto"  # "auto": cuda when there is a GPU, else cpu
    amp: bool = True  # bf16 autocast on GPUs with native bf16; float32 on the CPU
    compile: bool = False  # torch.compile the model for the training steps
    log_every: int = 50  # steps between history rows
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    time_budget_s: float | None = None  # None: no limit; else stop when spent
    print_logs: bool = False  # print each history row (the command line does)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(
                f"TrainConfig.time_budget_s must be > 0 seconds, or None for no limit, "
                f"got {self.time_budget_s}"
            )


def learning_rate(config: TrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to zero by the last step or the end of the time budget."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.time_budget_s:
        progress = max(progress, elapsed_s / config.time_budget_s)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
