# Generated from notebooks/10_command_line.ipynb by tools/export.py: edit the notebook.
"""The command line: `python -m vqvae_lite`, or the installed script `vqvae-lite-train`.

The appendix "Training for real" (`notebooks/10_command_line.ipynb`) explains it; chapter 6
the training it runs, chapter 7 the codebook variants that its flags choose.
"""

import argparse
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import torch

from vqvae_lite.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from vqvae_lite.codebook_upkeep import DEFAULT_MODELS
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.divergence import NonFiniteLossError
from vqvae_lite.image_folder import DataError
from vqvae_lite.metrics import format_metrics
from vqvae_lite.quantizer import registered_quantizers
from vqvae_lite.train import PRESETS, train
from vqvae_lite.training_flags import (
    add_training_flags,
    check_at_least,
    describe,
    load_training_images,
    out_folder,
    training_config,
)


def parser() -> argparse.ArgumentParser:
    """Every flag, with the preset's value as its default; chapter 6's training flags too."""
    parser = argparse.ArgumentParser(
        prog="python -m vqvae_lite", description="Train the VQ-VAE on CIFAR-10 or your images."
    )
    add = parser.add_argument
    # fmt: off
    add("--preset", choices=sorted(PRESETS), help="gpu: the full recipe; cpu: the budget "
        "recipe (default: gpu when a GPU is present, else cpu)")
    add("--data", help="image folder with train/ and test/ class folders, a .tar.gz of one, or "
        "'cifar10' to download (default: $VQVAE_LITE_DATA, shared/data, then the download)")
    add("--quantizer", choices=sorted(registered_quantizers()), help="the quantiser, by its "
        "registered name (default: ema, the best of chapter 7)")
    add("--restart-dead-after", type=int, metavar="STEPS", help="restart codes unused for this "
        "many steps; 0: never (default: the preset's)")
    add("--kmeans-init", action=argparse.BooleanOptionalAction, help="start the codebook at "
        "k-means centroids of the first encodings (default: off)")
    add("--compile", action="store_true", help="torch.compile the model")
    add("--out", type=out_folder, help="folder for the checkpoint, locked while a run trains in "
        "it (default: runs/<preset>)")
    # fmt: on
    add_training_flags(parser)
    return parser


def configs(args: argparse.Namespace, error) -> tuple[str, object, object]:
    """The preset name, the training config and the model config that the flags ask for."""
    check_at_least(error, ("--restart-dead-after", args.restart_dead_after, 0))
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    config = training_config(args, PRESETS[preset], error)
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


def check_processes(saved: dict, path: Path, processes: int) -> None:
    """CheckpointError if the run to resume was trained by another number of processes."""
    trained_by = saved["identity"].get("processes", 1)
    if trained_by != processes:
        raise CheckpointError(
            f"{path} was trained by {trained_by} process(es), each with its own batch; resume "
            f"it with {trained_by} (torchrun --nproc_per_node {trained_by} -m vqvae_lite ...): "
            f"{processes} would change the global batch, and with it the run"
        )


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
        saved = load_checkpoint(out / CHECKPOINT) if args.resume else None
        if saved:
            check_processes(saved, out / CHECKPOINT, processes)
        if saved and saved["step"] >= config.steps and saved["test"]:  # trained and evaluated
            done = saved["step"]
            print(
                f"the run in {out} is already at step {done}; "
                f"pass --steps > {done} to train further"
            )
            return 0
        splits = load_training_images(args, config.batch_size)
        print(f"preset {preset} on {hardware(device)}: {config}")
        print(f"model: {model_config}")
        result = (trainer or train)(model_config, config, splits, out, args.resume)
    except (OSError, ValueError, DataError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {describe(error)}", file=sys.stderr)
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
