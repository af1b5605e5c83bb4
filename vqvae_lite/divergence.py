# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Divergence: a loss that became NaN or inf or ran away, weights or Adam's moments that are
no longer finite, and the error that says what happened, what is kept and what to try.

Chapter 6 (`notebooks/06_training.ipynb`) explains the guards; the loop of `vqvae_lite.loop`
runs them before every update and every save.
"""

import math

import torch
from torch import Tensor

from vqvae_lite.run_state import Run
from vqvae_lite.train_config import TrainConfig

RUNAWAY = 1e6  # a loss this many times the size of the run's first loss has diverged


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss became NaN or inf or ran away (over `RUNAWAY` times the
    run's first loss), or the weights did; training stopped before saving them."""


def check_loss(loss: float, first_loss: float | None, step: int) -> None:
    """NonFiniteLossError if the loss of `step` is NaN or inf, or over RUNAWAY times the size
    of the run's first loss: a loss of 1e30 is finite, and its run has diverged all the same."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"the loss became {loss} at step {step}")
    if first_loss is not None and abs(loss) > RUNAWAY * abs(first_loss) > 0:
        raise NonFiniteLossError(
            f"the loss ran away, beyond {RUNAWAY:.0e} times the first loss of the run "
            f"({first_loss:.3g}), to {loss:.3g} at step {step}"
        )


def weights_are_finite(run: Run) -> bool:
    """True when every weight and optimiser moment is finite: only then is a state worth saving."""
    tensors = list(run.task.model.state_dict().values())  # and any extra state, not a weight
    tensors += [v for s in run.optimizer.state.values() for v in s.values()]
    floats = [t for t in tensors if torch.is_tensor(t) and t.is_floating_point()]
    return all(torch.isfinite(t).all() for t in floats)


def diverged(run: Run, batch: Tensor, error: ValueError) -> bool:
    """Whether the task's loss refused its values because training diverged, not its input:
    the weights went NaN or inf, or a finite batch gave NaN or inf inside the model."""
    inside = "finite" in str(error) and bool(torch.isfinite(batch).all())
    return inside or not weights_are_finite(run)


def divergence(what: str, kept: str, config: TrainConfig, resumable: bool) -> NonFiniteLossError:
    """The error for a diverged run: what happened, what is kept, and what to try. A resume may
    lower the learning rate; a longer warmup needs a new run."""
    rate, warmup = f"{config.learning_rate:g}", f"{config.warmup_steps} steps"
    if resumable:
        advice = (
            f"Resume it with a lower learning rate (this run: {rate}), or start a new run with "
            f"a longer warmup (this run: {warmup})."
        )
    else:
        advice = f"Try a lower learning rate (this run: {rate}) or a longer warmup (this run: "
        advice += f"{warmup})."
    return NonFiniteLossError(f"training diverged: {what}; {kept}. {advice}")
