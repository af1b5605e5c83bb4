# Generated from notebooks/10_command_line.ipynb by tools/export.py: edit the notebook.
"""The command line: `python -m vqvae_lite`, `python -m vqvae_lite.train` or `vqvae-lite-train`.

The appendix "Training for real" (`notebooks/10_command_line.ipynb`) explains it; chapter 6
the training it runs, chapter 7 the codebook variants that its flags choose.
"""

import argparse
import math
import os
import signal
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from vqvae_lite.checkpoint import CheckpointError, load_checkpoint
from vqvae_lite.codebook_upkeep import DEFAULT_MODELS
from vqvae_lite.data import DataError, DataWarning, ImageSplits, load_cifar10
from vqvae_lite.loop import CHECKPOINT, NonFiniteLossError, hardware, resolve_device
from vqvae_lite.metrics import format_metrics
from vqvae_lite.quantizer import QUANTIZERS
from vqvae_lite.train import PRESETS, train


def parser() -> argparse.ArgumentParser:
    """Every flag, with the preset's value as its default."""
    parser = argparse.ArgumentParser(
        prog="python -m vqvae_lite", description="Train the VQ-VAE on CIFAR-10 or your images."
    )
    add = parser.add_argument
    # fmt: off
    add("--preset", choices=sorted(PRESETS), help="gpu: the full recipe; cpu: the budget "
        "recipe (default: gpu when a GPU is present, else cpu)")
    add("--data", help="image folder with train/ and test/ class folders, a .tar.gz of one, or "
        "'cifar10' to download (default: $VQVAE_LITE_DATA, shared/data, then the download)")
    add("--image-size", type=int, metavar="PIXELS", help="resize (shorter side) and centre-crop "
        "every image to this square size, a multiple of 4 (default: the images' own size, 32 "
        "for CIFAR-10)")
    add("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present, else cpu)")
    add("--steps", type=int, help="number of training steps (default: the preset's)")
    add("--batch-size", type=int, metavar="N", help="images per step (default: the preset's)")
    add("--learning-rate", type=float, metavar="RATE", help="peak Adam step size (default: "
        "the preset's)")
    add("--time-budget", type=float, metavar="SECONDS", help="stop training after this many "
        "seconds; 0 means no limit (default: the preset's: 540 for cpu, no limit for gpu)")
    add("--quantizer", choices=sorted(QUANTIZERS), help="the quantiser, by its registered "
        "name (default: ema, the best of chapter 7)")
    add("--restart-dead-after", type=int, metavar="STEPS", help="restart codes unused for this "
        "many steps; 0: never (default: the preset's)")
    add("--kmeans-init", action=argparse.BooleanOptionalAction, help="start the codebook at "
        "k-means centroids of the first encodings (default: off)")
    add("--compile", action="store_true", help="torch.compile the model")
    add("--out", type=Path, help="folder for the checkpoint, locked while a run trains in it "
        "(default: runs/<preset>)")
    add("--resume", action="store_true", help="continue the run saved in --out")
    # fmt: on
    return parser


def configs(args: argparse.Namespace, error) -> tuple[str, object, object]:
    """The preset name, the training config and the model config that the flags ask for."""
    for flag, value, least in [
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--image-size", args.image_size, 4),
        ("--time-budget", args.time_budget, 0),
        ("--restart-dead-after", args.restart_dead_after, 0),
    ]:
        if value is not None and value < least:
            error(f"{flag} must be at least {least}, got {value}")
    rate = args.learning_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        error(f"--learning-rate must be above 0, got {rate}")
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    changes = dict(device=args.device, steps=args.steps, batch_size=args.batch_size)
    changes |= dict(learning_rate=rate, time_budget_s=args.time_budget)
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.time_budget == 0:
        changes["time_budget_s"] = None  # no limit
    config = replace(PRESETS[preset], print_logs=True, **changes)
    config.compile = config.compile or args.compile
    model_config = DEFAULT_MODELS[preset]
    quantizer = args.quantizer or model_config.quantizer
    # another quantiser starts from its own defaults, not from the default model's options
    options = dict(model_config.quantizer_options) if quantizer == model_config.quantizer else {}
    if args.restart_dead_after is not None:
        options["restart_dead_after"] = args.restart_dead_after
    if args.kmeans_init is not None:
        options["kmeans_init"] = args.kmeans_init
    return preset, config, replace(model_config, quantizer=quantizer, quantizer_options=options)


def load_images(args: argparse.Namespace, batch_size: int) -> ImageSplits:
    """The images that --data and --image-size name, with what the loader did to them
    printed as notes; a ValueError naming --batch-size if there are fewer images than that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # printed below, once each
        splits = load_cifar10(args.data, image_size=args.image_size)
    print(f"{splits.source}: {len(splits.train)} training and {len(splits.test)} test images")
    for note in splits.notes:
        print(f"note: {note}")
    if batch_size > len(splits.train):
        raise ValueError(
            f"--batch-size {batch_size} is more than the {len(splits.train)} training images: "
            f"pass --batch-size {len(splits.train)} or less, or add images"
        )
    return splits


def main(argv: list[str] | None = None, trainer=None, processes: int = 1) -> int:
    """Train, evaluate, checkpoint, resume; returns the exit status: 0 done, 1 an error that
    the message explains, 130 after Ctrl-C and 143 after SIGTERM (the run saved first).

    Under torchrun, appendix 11's `vqvae_lite.distributed.main` calls this with its own
    `trainer` and the number of `processes` that train together.
    """
    if processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(
            "error: under torchrun, start `-m vqvae_lite`: its processes train together",
            file=sys.stderr,
        )
        return 1
    args_parser = parser()
    args = args_parser.parse_args(argv)
    preset, config, model_config = configs(args, args_parser.error)
    out = args.out or Path("runs") / preset
    try:
        device = resolve_device(config.device)  # before the data: a wrong --device fails fast
        if args.resume and (done := load_checkpoint(out / CHECKPOINT)["step"]) >= config.steps:
            print(
                f"the run in {out} is already at step {done}; "
                f"pass --steps > {done} to train further"
            )
            return 0
        splits = load_images(args, config.batch_size)
        print(f"preset {preset} on {hardware(device)}: {config}")
        print(f"model: {model_config}")
        result = (trainer or train)(model_config, config, splits, out, args.resume)
    except (OSError, ValueError, DataError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:  # TrainingInterrupted says what was saved
        print(str(error) or "interrupted before training; nothing was written", file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
    images_seen = result.steps * config.batch_size * processes
    print(f"trained {result.steps} steps ({images_seen} images) in {result.wall_time_s:.0f} s")
    codes = result.model.quantizer.num_codes
    print(f"test ({len(splits.test)} images): {format_metrics(result.test)} of {codes}")
    print(f"checkpoint: {out / CHECKPOINT}")
    return 0
