# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The reusable training loop: steps, history rows, evaluation, checkpoints, interrupts and a
time budget, for any model that a `Task` describes.

Chapter 6 (`notebooks/06_training.ipynb`) builds it from the pieces in `train_config`,
`devices`, `task`, `logs`, `run_state`, `divergence`, `interrupts` and `run_folder`, and
trains the VQ-VAE with it; chapter 8 trains a prior over the codes with the same loop.
"""

import signal
import time
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vqvae_lite.devices import autocast
from vqvae_lite.divergence import NonFiniteLossError, check_loss, diverged
from vqvae_lite.interrupts import STOP_SIGNALS, TrainingInterrupted, deferred_interrupt
from vqvae_lite.logs import LogWindow, format_row, scalars
from vqvae_lite.run_folder import Checkpoints
from vqvae_lite.run_state import Run
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train_config import TrainConfig, learning_rate


def training_step(run: Run, batch: Tensor, device: torch.device) -> StepOutput:
    """Forward and loss (under autocast), divergence guard, backward and one optimiser update."""
    try:
        with autocast(device, run.config.amp):
            step = run.task.loss(batch)
    except ValueError as error:  # the model's own checks refuse NaN or inf inside it
        if not diverged(run, batch, error):
            raise
        raise NonFiniteLossError(
            f"the weights or activations became NaN or inf at step {run.step + 1}"
        ) from error
    loss = step.loss.item()
    check_loss(loss, run.first_loss, run.step + 1)  # before the update: the weights stay good
    if run.first_loss is None:
        run.first_loss = loss
    run.optimizer.zero_grad(set_to_none=True)
    step.loss.backward()
    run.optimizer.step()
    return step


def log_row(run: Run, lr: float) -> dict:
    """Close the log window: one history row with the task's summary and the pace."""
    config, window = run.config, run.window
    row = dict(step=run.step, epoch=run.task.batches.epoch, learning_rate=lr)
    row |= run.task.summarize(window.sums, window.steps)
    images = config.batch_size * run.task.processes  # one batch of every process
    row |= dict(elapsed_s=run.elapsed_s, images_per_s=window.images_per_s(images))
    run.history.append(row)
    run.window = LogWindow()
    return row


def train_steps(run: Run, checkpoints: Checkpoints, signals: list[int]) -> bool:
    """Train from `run.step` to the last step, the end of the time budget or a stop signal
    (on any process); after the last step, `finish`. True when a signal stopped it."""
    task, config = run.task, run.config
    device = next(task.model.parameters()).device
    start = time.perf_counter() - run.elapsed_s
    task.model.train()
    bar = tqdm(total=config.steps, initial=run.step, desc="training", unit="step",
               disable=not task.main_process)  # fmt: skip
    say = bar.write if task.main_process else lambda text: None
    stop = False
    with bar:
        while run.step < config.steps and not stop:
            lr = learning_rate(config, run.step, run.elapsed_s)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            try:
                step = training_step(run, next(task.batches), device)
            except NonFiniteLossError as error:
                raise checkpoints.error_for_divergence(str(error), config) from None
            run.window.add(step.logs | task.after_step(step))
            run.step += 1
            run.elapsed_s, stop = task.agree(time.perf_counter() - start, bool(signals))
            bar.update()
            out_of_time = config.time_budget_s is not None and run.elapsed_s >= config.time_budget_s
            last = run.step == config.steps or out_of_time
            evaluate_now = config.eval_every and run.step % config.eval_every == 0 and not last
            if run.step % config.log_every == 0 or last or evaluate_now:
                row = log_row(run, lr)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k == "loss"})
                if config.print_logs:
                    say(format_row(row))
            if evaluate_now:
                run.history[-1]["test"] = scalars(task.evaluate())
                say(f"step {run.step}: test {format_row(run.history[-1]['test'])}")
            if run.step % config.checkpoint_every == 0 or stop:
                checkpoints.save(run)
            if out_of_time:
                break
    if not stop or run.step == config.steps:
        finish(run, checkpoints)
    return stop


def finish(run: Run, checkpoints: Checkpoints) -> None:
    """Save the last step, evaluate on held-out data, and save again with the metrics: a run
    killed during its evaluation keeps every step, and a resume evaluates it."""
    if checkpoints.last_step != run.step:
        checkpoints.save(run)
    run.test = run.task.evaluate()
    if run.test:
        checkpoints.save(run)


def resume_or_start(task: Task, config: TrainConfig, checkpoints: Checkpoints) -> Run:
    """A Run with Adam: continued from the saved state if there is one, else just started.
    A resume may lower the learning rate, and says so."""
    device = next(task.model.parameters()).device
    lowered = checkpoints.check(task.identity, config)
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(task.model.parameters(), lr=config.learning_rate, fused=fused)
    run = Run(task, config, optimizer)
    if checkpoints.saved is not None:
        run.load_state_dict(checkpoints.saved, device)
    else:
        task.start()
    if lowered and task.main_process:
        print(f"resumed at step {run.step} with a lower setting: {', '.join(lowered)}")
    return run


def fit(task: Task, config: TrainConfig, out: str | Path | None = None, resume: bool = False):
    """Train `task.model` for `config.steps` steps (or the time budget) and return the Run.

    With `out`, checkpoints go to `out/checkpoint.pt`, and the folder is checked and locked
    first; `resume=True` continues from there exactly (a run already at `config.steps` is
    returned as it is, evaluated first if its evaluation was cut short). A missing, damaged
    or mismatched checkpoint raises CheckpointError before any step. Ctrl-C or SIGTERM: the
    step ends, the run is saved, and TrainingInterrupted says where; a second signal stops at
    once, and says what is kept.
    """
    write = task.main_process  # under several processes, one writes
    with deferred_interrupt() as signals, Checkpoints(out, resume, write) as checkpoints:
        try:
            run = resume_or_start(task, config, checkpoints)
            stopped = False
            if run.step < config.steps:
                stopped = train_steps(run, checkpoints, signals)
            elif not run.test:  # stopped during its final evaluation
                finish(run, checkpoints)
        except KeyboardInterrupt as error:  # a second signal: stopped at once
            signum = getattr(error, "signum", signal.SIGINT)
            what = str(error) or "interrupted"
            raise TrainingInterrupted(f"{what}; {checkpoints.kept()}", signum) from None
        if stopped:
            signum = signals[0] if signals else signal.SIGINT  # another process's signal
            what = f"stopped by {STOP_SIGNALS[signum]} after step {run.step}"
            raise TrainingInterrupted(f"{what}; {checkpoints.kept()}", signum)
    return run
