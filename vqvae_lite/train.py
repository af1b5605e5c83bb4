"""Training: resident data, live progress, logs, test metrics, checkpoints and exact resume.

Chapter 6 (`notebooks/06_training.ipynb`) trains the VQ-VAE on CIFAR-10 with it. From a
terminal: `python -m vqvae_lite.train --preset cpu` (or `--preset gpu`), `--resume` to continue.
"""

import argparse
import math
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vqvae_lite.checkpoint import (
    CheckpointError,
    config_differences,
    load_checkpoint,
    save_checkpoint,
)
from vqvae_lite.codebook import code_counts
from vqvae_lite.codebook_care import kmeans, restart_dead_codes
from vqvae_lite.data import (
    ImageSplits,
    ResidentBatches,
    load_cifar10,
    to_training_scale,
    training_variance,
)
from vqvae_lite.losses import vqvae_loss
from vqvae_lite.metrics import evaluate
from vqvae_lite.model import VQVAE, ModelConfig

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


# Settings that define the arithmetic of a run: a resumed run must keep them.
SAME_RUN = ["batch_size", "learning_rate", "warmup_steps", "seed", "restart_dead_after"]
SAME_RUN += ["kmeans_init"]

PRESETS = {
    # Budget recipe: recognisable reconstructions within 10 minutes on a 2-core CPU.
    "cpu": TrainConfig(
        steps=1500,
        batch_size=128,
        learning_rate=2e-3,
        log_every=25,
        checkpoint_every=250,
        restart_dead_after=50,
        kmeans_init=True,
        time_budget_s=540.0,
    ),
    # Full CIFAR-10 recipe: test NMSE <= 0.056 (the Sonnet example after 10,000 updates).
    "gpu": TrainConfig(
        steps=5000,
        batch_size=128,
        learning_rate=2e-3,
        warmup_steps=200,
        log_every=50,
        eval_every=1000,
        checkpoint_every=1000,
        restart_dead_after=50,
        kmeans_init=True,
    ),
}


@dataclass
class TrainResult:
    """What `train` returns."""

    model: VQVAE
    history: list[dict]  # one row per log step: step, loss, nmse, perplexity, codes_used, ...
    test: dict  # `evaluate` on the test split after the last step
    wall_time_s: float  # training time, summed over resumed sessions
    steps: int  # steps done (fewer than asked when the time budget ran out)
    data_variance: float  # pixel variance of the training split on the training scale


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped before the update could spoil the weights."""


def resolve_device(name: str) -> torch.device:
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
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        name = names[0] if names else name
    return f"CPU ({name}), {torch.get_num_threads()} threads"


def learning_rate(config: TrainConfig, step: int, spent_s: float = 0.0) -> float:
    """Linear warmup, then cosine decay to zero by the last step or the end of the time budget."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.time_budget_s:
        progress = max(progress, spent_s / config.time_budget_s)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on GPUs that have native bf16; a no-op elsewhere (distances stay float32)."""
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and native)


@torch.no_grad()
def kmeans_init(model: VQVAE, images: torch.Tensor, seed: int, count: int = 2048) -> None:
    """Set the codebook to k-means centroids of the encodings of `count` random images."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=generator)[:count].to(images.device)
    x = to_training_scale(images[pick]).contiguous(memory_format=torch.channels_last)
    z_e = torch.cat([model.encode(part) for part in x.split(512)])  # (count, D, h, w)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, model.config.embedding_dim)  # -> (count*h*w, D)
    model.quantizer.codebook.data.copy_(kmeans(flat, model.config.num_codes, seed=seed))


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


class LogWindow:
    """Sums over the steps since the last history row, kept on the device (no sync per step)."""

    def __init__(self, num_codes: int, device: torch.device):
        self.totals = torch.zeros(3, device=device)  # loss, nmse, commitment
        self.counts = torch.zeros(num_codes, dtype=torch.int64, device=device)
        self.steps, self.restarted, self.started = 0, 0, time.perf_counter()

    def add(self, terms, indices: torch.Tensor, restarted: int) -> None:
        parts = torch.stack([terms.total, terms.reconstruction, terms.commitment]).detach()
        self.totals += parts.float()
        self.counts += code_counts(indices, len(self.counts))
        self.steps, self.restarted = self.steps + 1, self.restarted + restarted

    def row(self, step: int, epoch: int, lr: float, spent_s: float, batch_size: int) -> dict:
        loss, nmse, commitment = (self.totals / self.steps).tolist()
        probs = self.counts.double() / self.counts.sum()
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
        seconds = time.perf_counter() - self.started
        return dict(
            step=step,
            epoch=epoch,
            learning_rate=lr,
            loss=loss,
            nmse=nmse,
            commitment=commitment,
            perplexity=entropy.exp().item(),
            codes_used=int((self.counts > 0).sum()),
            restarted=self.restarted,
            elapsed_s=spent_s,
            images_per_s=self.steps * batch_size / seconds,
        )


def check_resumable(saved: dict, model_config: ModelConfig, config: TrainConfig) -> None:
    """Raise CheckpointError unless the checkpoint belongs to this model and run settings."""
    differences = config_differences(saved["model_config"], asdict(model_config))
    differences += config_differences(saved["train_config"], asdict(config), SAME_RUN)
    if differences:
        raise CheckpointError(
            "the checkpoint belongs to another run; these settings differ (saved -> now):\n  "
            + "\n  ".join(differences)
        )


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
    """
    config = train_config
    device = resolve_device(config.device)
    path = None if out is None else Path(out) / CHECKPOINT
    saved = None
    if resume:
        if path is None:
            raise ValueError("resume=True needs the `out` folder that holds the checkpoint")
        saved = load_checkpoint(path)
        check_resumable(saved, model_config, config)
    elif path is not None and path.exists():
        raise FileExistsError(f"{path} exists: resume it, or choose another `out` folder")
    data_variance = training_variance(splits.train)
    if saved is not None and not math.isclose(saved["data_variance"], data_variance):
        raise CheckpointError(
            f"the checkpoint was trained on other data (pixel variance "
            f"{saved['data_variance']:.6f}, these images have {data_variance:.6f})"
        )

    torch.manual_seed(config.seed)
    model = VQVAE(model_config).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    batches = ResidentBatches(splits.train, config.batch_size, device, seed=config.seed)
    restarts = torch.Generator().manual_seed(config.seed + 1)  # picks for dead-code restarts
    unused_for = torch.zeros(model_config.num_codes, dtype=torch.int64, device=device)
    step, spent_s, history, test = 0, 0.0, [], {}
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        batches.load_state_dict(saved["batches"])
        restarts.set_state(saved["restart_generator"])
        unused_for.copy_(saved["unused_for"])
        torch.set_rng_state(saved["rng_state"])
        step, spent_s, history = saved["step"], saved["elapsed_s"], saved["history"]
    elif config.kmeans_init:
        kmeans_init(model, batches.images, config.seed)
    last_saved = step if saved is not None else None

    def checkpoint() -> dict:
        return dict(
            model_config=asdict(model_config),
            train_config=asdict(config),
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            step=step,
            elapsed_s=spent_s,
            data_variance=data_variance,
            batches=batches.state_dict(),
            restart_generator=restarts.get_state(),
            unused_for=unused_for.cpu(),
            rng_state=torch.get_rng_state(),
            history=history,
            test=test,
        )

    forward = torch.compile(model) if config.compile else model
    learn_codebook = model_config.codebook_update == "gradient"
    window = LogWindow(model_config.num_codes, device)
    bar = tqdm(total=config.steps, initial=step, desc="training", unit="step")
    start = time.perf_counter() - spent_s
    model.train()
    with deferred_interrupt() as interrupted:
        while step < config.steps:
            lr = learning_rate(config, step, spent_s)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = next(batches)  # (B, 3, 32, 32) float32 on the training scale
            with autocast(device, config.amp):
                output = forward(x)
                terms = vqvae_loss(
                    output.x_hat,
                    x,
                    output.z_e,
                    output.codes,
                    data_variance,
                    model_config.beta,
                    learn_codebook=learn_codebook,
                )
            loss = terms.total.item()
            if not math.isfinite(loss):
                kept = (
                    f"the last good checkpoint (step {last_saved}) is kept in {path}"
                    if last_saved is not None
                    else "no checkpoint was written"
                )
                raise NonFiniteLossError(
                    f"the loss became {loss} at step {step + 1}; training stopped before the "
                    f"update, and {kept}. Try a lower learning rate."
                )
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            used = code_counts(output.indices, model_config.num_codes) > 0
            unused_for = torch.where(used, 0, unused_for + 1)
            restarted = 0
            if config.restart_dead_after:
                dead = unused_for >= config.restart_dead_after
                flat = (
                    output.z_e.detach().permute(0, 2, 3, 1).reshape(-1, model_config.embedding_dim)
                )
                restarted = restart_dead_codes(model.quantizer, dead, flat, restarts)
                unused_for[dead] = 0
            window.add(terms, output.indices, restarted)
            step += 1
            spent_s = time.perf_counter() - start
            bar.update()
            out_of_time = config.time_budget_s is not None and spent_s >= config.time_budget_s
            if step % config.log_every == 0 or step == config.steps or out_of_time:
                history.append(window.row(step, batches.epoch, lr, spent_s, config.batch_size))
                window = LogWindow(model_config.num_codes, device)
                row = history[-1]
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    nmse=f"{row['nmse']:.4f}",
                    perplexity=f"{row['perplexity']:.0f}",
                    codes=row["codes_used"],
                )
                if config.print_logs:
                    bar.write(format_row(row))
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                history[-1]["test"] = summary_metrics(evaluate(model, splits.test, data_variance))
                bar.write(f"step {step}: test {format_metrics(history[-1]['test'])}")
            if path is not None and (step % config.checkpoint_every == 0 or interrupted.is_set()):
                save_checkpoint(path, checkpoint())
                last_saved = step
            if interrupted.is_set():
                bar.close()
                where = f"; resume from {path}" if path is not None else ""
                print(f"interrupted after step {step}{where}", file=sys.stderr)
                raise KeyboardInterrupt
            if out_of_time:
                break
    bar.close()
    wall_time_s = time.perf_counter() - start
    test = evaluate(model, splits.test, data_variance)
    if path is not None:
        spent_s = wall_time_s
        save_checkpoint(path, checkpoint())
    return TrainResult(model, history, test, wall_time_s, step, data_variance)


def summary_metrics(metrics: dict) -> dict:
    """The scalar metrics of `evaluate` (without the per-code counts)."""
    return {key: value for key, value in metrics.items() if key != "code_counts"}


def format_metrics(metrics: dict) -> str:
    return (
        f"NMSE {metrics['nmse']:.4f} | PSNR {metrics['psnr']:.2f} dB | "
        f"perplexity {metrics['perplexity']:.1f} | codes used {metrics['codes_used']}"
    )


def format_row(row: dict) -> str:
    return (
        f"step {row['step']:>6} | loss {row['loss']:.4f} | NMSE {row['nmse']:.4f} | "
        f"perplexity {row['perplexity']:6.1f} | codes used {row['codes_used']:>4} | "
        f"lr {row['learning_rate']:.2e} | {row['images_per_s']:.0f} img/s"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m vqvae_lite.train` / `vqvae-lite-train`: train, evaluate, checkpoint, resume."""
    parser = argparse.ArgumentParser(
        prog="vqvae-lite-train", description="Train the vqvae-lite VQ-VAE on CIFAR-10."
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="gpu: the full recipe; cpu: the budget recipe "
        "(default: gpu when a GPU is present, else cpu)",
    )
    parser.add_argument(
        "--data",
        help="image folder (train/ and test/ of class folders), a "
        ".tar.gz of one, or 'cifar10' to download (default: $VQVAE_LITE_DATA, "
        "then shared/data/cifar10-jpeg.tar.gz, then the download)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the preset's)")
    parser.add_argument("--steps", type=int, help="number of training steps")
    parser.add_argument("--time-budget", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--codebook",
        choices=["gradient", "ema"],
        default="gradient",
        help="how the codebook learns (chapter 4's loss, or chapter 7's EMA)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--out", help="folder for the checkpoint (default: runs/<preset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = parser.parse_args(argv)

    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    changes = {"device": args.device, "steps": args.steps, "time_budget_s": args.time_budget}
    changes = {key: value for key, value in changes.items() if value is not None}
    config = replace(PRESETS[preset], print_logs=True, compile=args.compile or None, **changes)
    if config.compile is None:
        config.compile = PRESETS[preset].compile
    out = Path(args.out or Path("runs") / preset)
    try:
        splits = load_cifar10(args.data)
        device = resolve_device(config.device)
        print(
            f"data: {splits.source}, {len(splits.train)} train and {len(splits.test)} test "
            f"images; preset {preset} on {hardware(device)}"
        )
        result = train(ModelConfig(codebook_update=args.codebook), config, splits, out, args.resume)
    except (FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    images = result.steps * config.batch_size
    print(
        f"trained {result.steps} steps ({images} images) in {result.wall_time_s:.0f} s, "
        f"{images / result.wall_time_s:.0f} img/s on average"
    )
    print(
        f"test ({len(splits.test)} images): {format_metrics(result.test)} of "
        f"{result.model.config.num_codes}"
    )
    print(f"checkpoint: {out / CHECKPOINT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
