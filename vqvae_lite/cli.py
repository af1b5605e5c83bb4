# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The command line of chapter 6: `python -m vqvae_lite.train` or `vqvae-lite-train`.

Chapter 6 (`notebooks/06_training.ipynb`) explains the training it runs; chapter 7 the codebook
variants that `--codebook`, `--restart-dead-after` and `--kmeans-init` choose.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from vqvae_lite.checkpoint import CheckpointError
from vqvae_lite.data import load_cifar10
from vqvae_lite.metrics import format_metrics
from vqvae_lite.train import (
    CHECKPOINT,
    PRESET_MODEL,
    PRESETS,
    NonFiniteLossError,
    hardware,
    resolve_device,
    train,
)


def main(argv: list[str] | None = None) -> int:
    """`python -m vqvae_lite.train` / `vqvae-lite-train`: train, evaluate, checkpoint, resume."""
    parser = argparse.ArgumentParser(
        prog="vqvae-lite-train", description="Train the vqvae-lite VQ-VAE on CIFAR-10."
    )
    add = parser.add_argument
    # fmt: off
    add("--preset", choices=sorted(PRESETS), help="gpu: the full recipe; cpu: the budget "
        "recipe (default: gpu when a GPU is present, else cpu)")
    add("--data", help="image folder with train/ and test/ class folders, a .tar.gz of one, or "
        "'cifar10' to download (default: $VQVAE_LITE_DATA, shared/data, then the download)")
    add("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present, else cpu)")
    add("--steps", type=int, help="number of training steps (default: the preset's)")
    add("--time-budget", type=float, metavar="SECONDS", help="stop training after this many "
        "seconds; 0: no limit (default: the preset's)")
    add("--codebook", choices=["ema", "gradient"], default=PRESET_MODEL.codebook_update,
        help="ema: moving-average codes (chapter 7); gradient: the codebook term of chapter 4's "
        "loss (default: %(default)s)")
    add("--restart-dead-after", type=int, metavar="STEPS", help="restart codes unused for this "
        "many steps; 0: never (default: the preset's)")
    add("--kmeans-init", action=argparse.BooleanOptionalAction, help="start the codebook at "
        "k-means centroids of the first encodings (default: the preset's)")
    add("--compile", action="store_true", help="torch.compile the model")
    add("--out", type=Path, help="folder for the checkpoint (default: runs/<preset>)")
    add("--resume", action="store_true", help="continue the run saved in --out")
    # fmt: on
    args = parser.parse_args(argv)
    for flag, value, least in [
        ("--steps", args.steps, 1),
        ("--time-budget", args.time_budget, 0),
        ("--restart-dead-after", args.restart_dead_after, 0),
    ]:
        if value is not None and value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")

    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    changes = {
        "device": args.device,
        "steps": args.steps,
        "time_budget_s": args.time_budget,
        "restart_dead_after": args.restart_dead_after,
        "kmeans_init": args.kmeans_init,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.time_budget == 0:
        changes["time_budget_s"] = None  # no limit
    config = replace(PRESETS[preset], print_logs=True, **changes)
    config.compile = config.compile or args.compile
    model_config = replace(PRESET_MODEL, codebook_update=args.codebook)
    out = args.out or Path("runs") / preset
    try:
        splits = load_cifar10(args.data)
        print(f"{splits.source}: {len(splits.train)} training and {len(splits.test)} test images")
        print(f"preset {preset} on {hardware(resolve_device(config.device))}: {config}")
        print(f"model: {model_config}")
        result = train(model_config, config, splits, out, args.resume)
    except (FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    images = result.steps * config.batch_size
    print(f"trained {result.steps} steps ({images} images) in {result.wall_time_s:.0f} s")
    codes = result.model.config.num_codes
    print(f"test ({len(splits.test)} images): {format_metrics(result.test)} of {codes}")
    print(f"checkpoint: {out / CHECKPOINT}")
    return 0
