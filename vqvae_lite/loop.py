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
    """Forward and loss (under autocast), NaN guard, backward and one optimiser update."""
    with autocast(device, run.config.amp):
        step = run.task.loss(batch)
    loss = step.loss.item()
    if not math.isfinite(loss):  # check before the update, so the weights stay good
        raise NonFiniteLossError(f"the loss became {loss} at step {run.step + 1}")
    run.optimizer.zero_grad(set_to_none=True)
    step.loss.backward()
    run.optimizer.step()
    return step


def weights_are_finite(run: Run) -> bool:
    """True when every weight and optimiser moment is finite: only then is a state worth saving."""
    tensors = list(run.task.model.state_dict().values())
    tensors += [v for s in run.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    tensors = [t for t in tensors if torch.is_tensor(t)]  # not a module's extra state
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


@contextmanager
def deferred_interrupt():
    """First Ctrl-C (or notebook interrupt): finish the step and save; a second stops at once."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


class Checkpoints:
    """Where a run is saved: refuses to overwrite a finished run, loads one to resume."""

    def __init__(self, out: str | Path | None, resume: bool, write: bool = True):
        self.path = None if out is None else Path(out) / CHECKPOINT
        self.write = write  # False: check and load, but leave the writing to another process
        if resume and self.path is None:
            raise ValueError("resume=True needs the `out` folder that holds the checkpoint")
        if not resume and self.path is not None and self.path.exists():
            raise FileExistsError(f"{self.path} exists: resume it, or choose another folder")
        self.saved = load_checkpoint(self.path) if resume else None
        self.last_step = self.saved["step"] if self.saved else None

    def check(self, identity: dict, config: TrainConfig) -> None:
        """CheckpointError unless the saved run is this task with the same arithmetic."""
        if self.saved is not None:
            check_resumable(self.saved, identity, asdict(config), SAME_RUN)

    def save(self, run: Run) -> None:
        """Write the run atomically, unless its weights went non-finite (then raise)."""
        if self.path is None:
            return
        if not weights_are_finite(run):
            raise NonFiniteLossError(
                f"the weights became NaN or inf by step {run.step}; {self.kept()}"
            )
        if self.write:
            save_checkpoint(self.path, run.state_dict())
        self.last_step = run.step

    def kept(self) -> str:
        if self.last_step is None:
            return "no checkpoint was written. Try a lower learning rate."
        return (
            f"the last good checkpoint (step {self.last_step}) is kept in {self.path}. "
            "Try a lower learning rate."
        )


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


def fit(task: Task, config: TrainConfig, out: str | Path | None = None, resume: bool = False):
    """Train `task.model` for `config.steps` steps (or the time budget) and return the Run.

    With `out`, checkpoints go to `out/checkpoint.pt`; `resume=True` continues from there
    exactly. A missing, corrupt or mismatched checkpoint raises CheckpointError first.
    """
    device = next(task.model.parameters()).device
    checkpoints = Checkpoints(out, resume, write=task.main_process)
    checkpoints.check(task.identity, config)
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(task.model.parameters(), lr=config.learning_rate, fused=fused)
    run = Run(task, config, optimizer)
    if checkpoints.saved is not None:
        run.load_state_dict(checkpoints.saved, device)
    else:
        task.start()
    start = time.perf_counter() - run.elapsed_s
    task.model.train()
    bar = tqdm(
        total=config.steps,
        initial=run.step,
        desc="training",
        unit="step",
        disable=not task.main_process,
    )
    say = bar.write if task.main_process else lambda text: None
    with bar, deferred_interrupt() as interrupted:
        while run.step < config.steps:
            lr = learning_rate(config, run.step, run.elapsed_s)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                step = training_step(run, next(task.batches), device)
            except NonFiniteLossError as error:
                raise NonFiniteLossError(f"{error}: {checkpoints.kept()}") from None
            run.window.add(step.logs | task.after_step(step))
            run.step += 1
            run.elapsed_s, stop = task.agree(time.perf_counter() - start, interrupted.is_set())
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
            if stop:
                saved = f"; resume from {checkpoints.path}" if checkpoints.path else ""
                say(f"interrupted after step {run.step}{saved}")
                raise KeyboardInterrupt
            if out_of_time:
                break
    run.test = task.evaluate()
    checkpoints.save(run)
    return run
