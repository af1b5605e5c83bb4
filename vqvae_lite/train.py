# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Training: resident data, live progress, logs, test metrics, checkpoints and exact resume.

Chapter 6 (`notebooks/06_training.ipynb`) trains the VQ-VAE on CIFAR-10 with it. From a
terminal: `python -m vqvae_lite.train --preset cpu` (or `--preset gpu`); `--resume` continues
(the command line is `vqvae_lite.cli`).
"""

import math
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vqvae_lite.checkpoint import (
    CheckpointError,
    Run,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)
from vqvae_lite.codebook import code_counts
from vqvae_lite.codebook_care import init_codebook, restart_dead_codes
from vqvae_lite.data import (
    ImageSplits,
    ResidentBatches,
    to_training_scale,
    training_variance,
)
from vqvae_lite.losses import LossTerms, vqvae_loss
from vqvae_lite.metrics import LogWindow, evaluate, format_metrics, format_row
from vqvae_lite.model import VQVAE, ModelConfig, VQVAEOutput

CHECKPOINT = "checkpoint.pt"  # the file `train` keeps in its `out` folder


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
    eval_every: int = 0  # steps between test-split evaluations (0: only at the end)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    time_budget_s: float | None = None  # stop when spent; the schedule then follows the time
    restart_dead_after: int = 0  # move codes unused for this many steps onto encoder outputs
    kmeans_init: bool = False  # start the codebook from k-means of the first encodings
    print_logs: bool = False  # print each history row (the command line does)


# The settings that fix a run's arithmetic: resuming with other values is refused.
SAME_RUN = ["batch_size", "learning_rate", "warmup_steps", "seed", "restart_dead_after"]
SAME_RUN += ["kmeans_init"]

# The model both presets train: the EMA codebook that chapter 7 finds best.
PRESET_MODEL = ModelConfig(codebook_update="ema")

PRESETS = {
    # Budget recipe: recognisable reconstructions within 10 minutes on a 2-core CPU.
    "cpu": TrainConfig(
        steps=1500,
        batch_size=128,
        learning_rate=2e-3,
        warmup_steps=30,
        log_every=25,
        checkpoint_every=250,
        restart_dead_after=20,
        time_budget_s=540.0,
    ),
    # Full CIFAR-10 recipe: test NMSE <= 0.056 (the Sonnet example after 10,000 updates).
    "gpu": TrainConfig(
        steps=4000,
        batch_size=128,
        learning_rate=1.5e-3,
        warmup_steps=100,
        log_every=50,
        eval_every=1000,
        checkpoint_every=1000,
        restart_dead_after=50,
    ),
}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped before the update could spoil the weights."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when a GPU is present, else cpu; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    """bf16 autocast on GPUs with native bf16; a no-op elsewhere. Distances stay float32."""
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and native)


def learning_rate(config: TrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to zero by the last step or the end of the time budget."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.time_budget_s:
        progress = max(progress, elapsed_s / config.time_budget_s)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def new_run(model_config: ModelConfig, config: TrainConfig, splits: ImageSplits) -> Run:
    """A fresh model (seeded), its Adam optimiser, and the training images on the device."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = VQVAE(model_config).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, fused=device.type == "cuda"
    )
    batches = ResidentBatches(splits.train, config.batch_size, device, seed=config.seed)
    return Run(
        model_config,
        config,
        model,
        optimizer,
        batches,
        data_variance=training_variance(splits.train),
        restarts=torch.Generator().manual_seed(config.seed + 1),
        unused_for=torch.zeros(model_config.num_codes, dtype=torch.int64, device=device),
        window=LogWindow(model_config.num_codes, device),
    )


@torch.no_grad()
def init_codebook_by_kmeans(model: VQVAE, images: Tensor, seed: int, count: int = 2048) -> None:
    """Start the codebook at k-means centroids of the encodings of `count` random images."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=generator)[:count].to(images.device)
    x = to_training_scale(images[pick]).contiguous(memory_format=torch.channels_last)
    z_e = torch.cat([model.encode(part) for part in x.split(512)])  # (count, D, h, w)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, model.config.embedding_dim)  # -> (count*h*w, D)
    init_codebook(model.quantizer, flat, seed=seed)


def training_step(run: Run, forward, x: Tensor) -> tuple[LossTerms, VQVAEOutput]:
    """Forward, loss, NaN guard, backward and Adam update for one batch x (B, 3, H, W)."""
    device, learn_codebook = x.device, run.model_config.codebook_update == "gradient"
    with autocast(device, run.config.amp):
        output = forward(x)
        beta, variance = run.model_config.beta, run.data_variance
        terms = vqvae_loss(
            output.x_hat, x, output.z_e, output.codes, variance, beta, learn_codebook
        )
    loss = terms.total.item()
    if not math.isfinite(loss):  # check before the update, so the weights stay good
        raise NonFiniteLossError(f"the loss became {loss} at step {run.step + 1}")
    run.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    run.optimizer.step()
    return terms, output


def restart_unused_codes(run: Run, output: VQVAEOutput) -> int:
    """Count the steps since each code was used; restart those unused for too long."""
    used = code_counts(output.indices, run.model_config.num_codes) > 0  # (K,)
    run.unused_for = torch.where(used, 0, run.unused_for + 1)
    if not run.config.restart_dead_after:
        return 0
    dead = run.unused_for >= run.config.restart_dead_after  # (K,)
    z_e = output.z_e.detach()
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, run.model_config.embedding_dim)  # (B*h*w, D)
    run.unused_for[dead] = 0
    return restart_dead_codes(run.model.quantizer, dead, flat, run.restarts)


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


@dataclass
class TrainResult:
    """What `train` returns."""

    model: VQVAE
    history: list[dict]  # one row per log step: step, loss, nmse, perplexity, codes_used, ...
    test: dict  # `evaluate` on the test split after the last step
    wall_time_s: float  # training time, summed over resumed sessions
    steps: int  # steps done (fewer than asked when the time budget ran out)
    data_variance: float  # pixel variance of the training split, on the training scale


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    splits: ImageSplits,
    out: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a VQ-VAE on `splits.train`, evaluate it on `splits.test`, checkpoint into `out`.

    With `resume=True` the run continues from `out/checkpoint.pt` exactly where it stopped:
    weights, optimiser, step, batch order, random states, dead-code counters and history.
    A missing, corrupt or mismatched checkpoint raises CheckpointError before anything is written.
    """
    config = train_config
    path = None if out is None else Path(out) / CHECKPOINT
    if resume and path is None:
        raise ValueError("resume=True needs the `out` folder that holds the checkpoint")
    if not resume and path is not None and path.exists():
        raise FileExistsError(f"{path} exists: resume it, or choose another `out` folder")
    saved = load_checkpoint(path) if resume else None
    if saved is not None:
        check_resumable(saved, asdict(model_config), asdict(config), SAME_RUN)
    run = new_run(model_config, config, splits)
    if saved is not None:
        if not math.isclose(saved["data_variance"], run.data_variance):
            raise CheckpointError(
                f"the checkpoint was trained on other images (pixel variance "
                f"{saved['data_variance']:.6f}; these have {run.data_variance:.6f})"
            )
        run.load_state_dict(saved)
    elif config.kmeans_init:
        init_codebook_by_kmeans(run.model, run.batches.images, config.seed)

    last_saved = run.step if saved is not None else None
    forward = torch.compile(run.model) if config.compile else run.model
    start = time.perf_counter() - run.elapsed_s
    run.model.train()
    progress = tqdm(total=config.steps, initial=run.step, desc="training", unit="step")
    with progress as bar, deferred_interrupt() as interrupted:
        while run.step < config.steps:
            lr = learning_rate(config, run.step, run.elapsed_s)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            x = next(run.batches)  # (B, 3, 32, 32) float32 on the training scale
            try:
                terms, output = training_step(run, forward, x)
            except NonFiniteLossError as error:
                kept = f"the last good checkpoint (step {last_saved}) is kept in {path}"
                raise NonFiniteLossError(
                    f"{error}: training stopped before the update, and "
                    f"{kept if last_saved is not None else 'no checkpoint was written'}. "
                    "Try a lower learning rate."
                ) from None
            run.window.add(terms, output.indices, restart_unused_codes(run, output))
            run.step += 1
            run.elapsed_s = time.perf_counter() - start
            bar.update()
            out_of_time = config.time_budget_s is not None and run.elapsed_s >= config.time_budget_s
            last = run.step == config.steps or out_of_time
            evaluate_now = config.eval_every and run.step % config.eval_every == 0 and not last
            if run.step % config.log_every == 0 or last or evaluate_now:
                row = run.window.row(
                    run.step, run.batches.epoch, lr, run.elapsed_s, config.batch_size
                )
                run.history.append(row)
                run.window = LogWindow(model_config.num_codes, run.unused_for.device)
                bar.set_postfix(nmse=f"{row['nmse']:.4f}", perplexity=f"{row['perplexity']:.0f}")
                if config.print_logs:
                    bar.write(format_row(row))
            if evaluate_now:  # the test split, between steps (the last one is evaluated below)
                metrics = evaluate(run.model, splits.test, run.data_variance)
                run.history[-1]["test"] = {k: v for k, v in metrics.items() if k != "code_counts"}
                bar.write(f"step {run.step}: test {format_metrics(metrics)}")
            if path is not None and (
                run.step % config.checkpoint_every == 0 or interrupted.is_set()
            ):
                save_checkpoint(path, run.state_dict())
                last_saved = run.step
            if interrupted.is_set():
                saved_to = f"; resume from {path}" if path is not None else ""
                bar.write(f"interrupted after step {run.step}{saved_to}", file=sys.stderr)
                raise KeyboardInterrupt
            if out_of_time:
                break
    run.test = evaluate(run.model, splits.test, run.data_variance)
    if path is not None:
        save_checkpoint(path, run.state_dict())
    return TrainResult(run.model, run.history, run.test, run.elapsed_s, run.step, run.data_variance)


if __name__ == "__main__" and "ipykernel" not in sys.modules:  # not in chapter 6 itself
    from vqvae_lite.cli import main

    sys.exit(main())
