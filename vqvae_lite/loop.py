# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The reusable training loop: schedule, progress, logs, evaluation, checkpoints, interrupts
and a time budget, for any model that a `Task` describes.

Chapter 6 (`notebooks/06_training.ipynb`) builds it and trains the VQ-VAE with it; chapter 8
trains a prior over the codes with the same loop.
"""

import math
import platform
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from vqvae_lite.checkpoint import (
    CheckpointError,
    check_resumable,
    claim_folder,
    load_checkpoint,
    save_checkpoint,
)

CHECKPOINT = "checkpoint.pt"  # the file `fit` keeps in its `out` folder
SAME_RUN = ["batch_size", "learning_rate", "warmup_steps", "seed"]  # a resume must keep these


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


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when a GPU is present, else cpu; any other name, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        here = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        raise ValueError(
            f"device {name!r} is not usable here ({str(error).splitlines()[0]}); "
            f"devices on this machine: {', '.join(here)}"
        ) from None
    return device


def hardware(device: torch.device) -> str:
    """A short description of the chip that trains, for the record of a run."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else name
    return f"CPU ({name}), {torch.get_num_threads()} threads"


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on GPUs with native bf16; elsewhere nothing changes.

    The quantiser's distances and the losses switch autocast off themselves, so they stay in
    float32 under any autocast.
    """
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if enabled and native:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def learning_rate(config: TrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to zero by the last step or the end of the time budget."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.time_budget_s:
        progress = max(progress, elapsed_s / config.time_budget_s)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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


class NonFiniteLossError(FloatingPointError):
    """The loss or the weights became NaN or inf; training stopped before saving them."""


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
    if not math.isfinite(loss):  # check before the update, so the weights stay good
        raise NonFiniteLossError(f"the loss became {loss} at step {run.step + 1}")
    run.optimizer.zero_grad(set_to_none=True)
    step.loss.backward()
    run.optimizer.step()
    return step


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


def divergence(what: str, kept: str, config: TrainConfig) -> NonFiniteLossError:
    """The error for a run gone NaN or inf: what happened, what is kept, what to try."""
    return NonFiniteLossError(
        f"training diverged: {what}; {kept}. Try a lower learning rate (this run: "
        f"{config.learning_rate:g}) or a longer warmup (this run: {config.warmup_steps} steps)."
    )


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM; the message says what was saved."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum  # the command line exits with 128 + signum: 130 or 143


@contextmanager
def deferred_interrupt():
    """The first Ctrl-C, notebook interrupt or SIGTERM (a cluster's scheduler, `docker stop`,
    `kill`): the loop finishes its step, saves and stops. A second signal stops at once.

    Yields the list of the signals received so far.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        if len(received) > 1:
            name = STOP_SIGNALS[signum]
            raise TrainingInterrupted(f"a second signal, {name}, stopped training at once", signum)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


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

    def check(self, identity: dict, config: TrainConfig) -> None:
        """CheckpointError unless the saved run is this task with the same arithmetic."""
        if self.saved is not None:
            check_resumable(self.saved, identity, asdict(config), SAME_RUN)

    def save(self, run: Run) -> None:
        """Write the run atomically, unless its weights or Adam's moments went NaN or inf."""
        if self.path is None:
            return
        if not weights_are_finite(run):
            what = f"the weights or Adam's moments became NaN or inf by step {run.step}"
            raise divergence(what, self.kept(), run.config)
        if self.write:
            save_checkpoint(self.path, run.state_dict())
        self.last_step = run.step

    def kept(self) -> str:
        """What is on disk now, for a message."""
        if self.path is None:
            return "nothing was saved (no `out` folder)"
        if self.last_step is None:
            return f"no checkpoint was written to {self.path.parent}"
        return f"the last good checkpoint (step {self.last_step}) is kept in {self.path}"


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


def train_steps(run: Run, checkpoints: Checkpoints, signals: list[int]) -> bool:
    """Train from `run.step` to the last step, the end of the time budget or a stop signal
    (on any process); after the last step, evaluate and save. True when a signal stopped it."""
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
                raise divergence(str(error), checkpoints.kept(), config) from None
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
        run.test = task.evaluate()
        checkpoints.save(run)
    return stop


def resume_or_start(task: Task, config: TrainConfig, checkpoints: Checkpoints) -> Run:
    """A Run with Adam: continued from the saved state if there is one, else just started."""
    device = next(task.model.parameters()).device
    checkpoints.check(task.identity, config)
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(task.model.parameters(), lr=config.learning_rate, fused=fused)
    run = Run(task, config, optimizer)
    if checkpoints.saved is not None:
        run.load_state_dict(checkpoints.saved, device)
    else:
        task.start()
    return run


def fit(task: Task, config: TrainConfig, out: str | Path | None = None, resume: bool = False):
    """Train `task.model` for `config.steps` steps (or the time budget) and return the Run.

    With `out`, checkpoints go to `out/checkpoint.pt`, and the folder is checked and locked
    first; `resume=True` continues from there exactly (a run already at `config.steps` is
    returned as it is). A missing, damaged or mismatched checkpoint raises CheckpointError
    before any step. Ctrl-C or SIGTERM: the step ends, the run is saved, and
    TrainingInterrupted says where; a second signal stops at once, and says what is kept.
    """
    write = task.main_process  # under several processes, one writes
    with deferred_interrupt() as signals, Checkpoints(out, resume, write) as checkpoints:
        try:
            run = resume_or_start(task, config, checkpoints)
            stopped = run.step < config.steps and train_steps(run, checkpoints, signals)
        except KeyboardInterrupt as error:  # a second signal: stopped at once
            signum = getattr(error, "signum", signal.SIGINT)
            what = str(error) or "interrupted"
            raise TrainingInterrupted(f"{what}; {checkpoints.kept()}", signum) from None
        if stopped:
            signum = signals[0] if signals else signal.SIGINT  # another process's signal
            what = f"stopped by {STOP_SIGNALS[signum]} after step {run.step}"
            raise TrainingInterrupted(f"{what}; {checkpoints.kept()}", signum)
    return run
