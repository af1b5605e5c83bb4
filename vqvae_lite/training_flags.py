# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The flags that every training command of this book shares, and what they set: the VQ-VAE's
command (appendix 10) and the prior's (chapter 8).

Chapter 6 (`notebooks/06_training.ipynb`) explains the configuration they change.
"""

import argparse
import math
import warnings
from dataclasses import replace
from pathlib import Path

from vqvae_lite.data import load_cifar10
from vqvae_lite.image_folder import DataWarning, ImageSplits
from vqvae_lite.train_config import TrainConfig


def out_folder(name: str) -> Path:
    """--out's folder; an empty name, which would write into the current folder, is refused."""
    if not name.strip():
        raise argparse.ArgumentTypeError("needs a folder name, got ''")
    return Path(name)


def add_training_flags(parser: argparse.ArgumentParser, unit: str = "images") -> None:
    """The flags of a training run; `unit` names what a batch holds."""
    add = parser.add_argument
    # fmt: off
    add("--image-size", type=int, metavar="PIXELS", help="resize (shorter side) and "
        "centre-crop every image to this square size, a multiple of 4 (default: the images' "
        "own size, 32 for CIFAR-10)")
    add("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present, else cpu)")
    add("--steps", type=int, help="number of training steps (default: the preset's)")
    add("--batch-size", type=int, metavar="N", help=f"{unit} per step (default: the "
        "preset's)")
    add("--learning-rate", type=float, metavar="RATE", help="peak Adam step size (default: "
        "the preset's)")
    add("--time-budget", type=float, metavar="SECONDS", help="stop training after this many "
        "seconds; 0 means no limit (default: the preset's)")
    add("--checkpoint-every", type=int, metavar="STEPS", help="steps between checkpoints; one "
        "is also written before and after the final evaluation (default: the preset's)")
    add("--resume", action="store_true", help="continue the run saved in --out")
    # fmt: on


def check_at_least(error, *flags: tuple[str, float | None, float]) -> None:
    """`error` for the first (flag, value, least) whose value is given and not >= least."""
    for flag, value, least in flags:
        if value is not None and not value >= least:  # NaN too
            error(f"{flag} must be at least {least}, got {value}")


def training_config(args: argparse.Namespace, preset: TrainConfig, error) -> TrainConfig:
    """`preset` with the changes the training flags ask for, printing its logs; `error`
    reports a flag out of range."""
    check_at_least(
        error,
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--image-size", args.image_size, 4),
        ("--time-budget", args.time_budget, 0),
        ("--checkpoint-every", args.checkpoint_every, 1),
    )
    rate = args.learning_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        error(f"--learning-rate must be finite and above 0, got {rate}")
    changes = dict(device=args.device, steps=args.steps, batch_size=args.batch_size)
    changes |= dict(learning_rate=rate, time_budget_s=args.time_budget)
    changes |= dict(checkpoint_every=args.checkpoint_every)
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.time_budget == 0:
        changes["time_budget_s"] = None  # no limit
    return replace(preset, print_logs=True, **changes)


def describe(error: Exception) -> str:
    """An error's message for the one line a command prints; for a file the system refused,
    which file and why, without the error number."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"cannot use {error.filename}: {error.strerror}"
    return str(error)


def load_training_images(args: argparse.Namespace, batch_size: int) -> ImageSplits:
    """The images that --data and --image-size name, with what the loader did to them
    printed as notes; a ValueError naming --batch-size if there are fewer images than that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # printed below, once each
        splits = load_cifar10(args.data, image_size=args.image_size)
    print(f"{splits.source}: {len(splits.train)} training and {len(splits.test)} test images")
    for note in splits.notes:
        print(f"note: {note}")
    if batch_size > (count := len(splits.train)):
        raise ValueError(
            f"--batch-size {batch_size} is more than the {count} training images: "
            f"pass --batch-size {count} or less, or add images"
        )
    return splits
