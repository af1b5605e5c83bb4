# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""The command `python -m vqvae_lite.prior`: train a prior over the codes of a trained VQ-VAE
on the images it trained on, and write sampled images.

Chapter 8 (`notebooks/08_prior.ipynb`) builds every part it runs: the code data set
(`code_dataset`), the priors (`pixelcnn`, `code_transformer`, chosen through
`prior_registry`), their task for the loop (`prior_task`) and sampling (`sampling`).
"""

import argparse
import math
import signal
import sys
from dataclasses import replace
from pathlib import Path

import torch

from vqvae_lite.checkpoint import CHECKPOINT, CheckpointError
from vqvae_lite.code_dataset import CodeSplits, cached_codes, decode_codes
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.divergence import NonFiniteLossError
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.loop import fit
from vqvae_lite.model import VQVAE
from vqvae_lite.prior_registry import PRIORS, PriorConfig
from vqvae_lite.prior_task import PRIOR_MODELS, PRIOR_PRESETS, PriorTask
from vqvae_lite.run_folder import Checkpoints
from vqvae_lite.sampling import sample, save_png
from vqvae_lite.shipped import load_vqvae
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_flags import (
    add_training_flags,
    describe,
    load_training_images,
    out_folder,
    training_config,
)
from vqvae_lite.training_scale import training_variance


def parser() -> argparse.ArgumentParser:
    """Every flag; the training flags are chapter 6's, as in the VQ-VAE's command."""
    parser = argparse.ArgumentParser(
        prog="python -m vqvae_lite.prior",
        description="Train a prior over the codes of a trained VQ-VAE and sample images.",
    )
    add = parser.add_argument
    # fmt: off
    add("--vqvae", required=True, help="a trained VQ-VAE: its checkpoint, or the name of "
        "a shipped one (default, plain)")
    add("--out", type=out_folder, default=Path("runs/prior"), help="folder for the prior's "
        "checkpoint, its codes.pt and samples.png, locked while it is in use "
        "(default: runs/prior)")
    add("--prior", choices=sorted(PRIORS), default="pixelcnn", help="a registered prior "
        "(default: pixelcnn, the gated PixelCNN)")
    add("--preset", choices=sorted(PRIOR_PRESETS), help="sizes and recipe (default: gpu "
        "when a GPU is present, else cpu)")
    add("--data", help="the images the VQ-VAE trained on (default: as its command: "
        "$VQVAE_LITE_DATA, shared/data, then the download)")
    add("--temperature", type=float, default=1.0, help="sampling temperature, finite and "
        "above 0 (default: 1)")
    add("--guidance", type=float, default=0.0, help="guidance towards the class, finite and "
        "at least 0; it samples num_classes times slower (default: 0, none)")
    # fmt: on
    add_training_flags(parser, unit="code grids")
    return parser


def prior_training_config(args: argparse.Namespace, error) -> tuple[str, TrainConfig]:
    """The preset name and the training config that the flags ask for; `error` reports a
    flag out of range."""
    temperature = args.temperature
    if not (math.isfinite(temperature) and temperature > 0):
        error(f"--temperature must be finite and above 0, got {temperature}")
    if not (math.isfinite(args.guidance) and args.guidance >= 0):
        error(f"--guidance must be finite and at least 0, got {args.guidance}")
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    return preset, training_config(args, PRIOR_PRESETS[preset], error)


def load_images(args: argparse.Namespace, batch_size: int, variance: float) -> ImageSplits:
    """The images of --data at --image-size, with what the loader did to them printed as
    notes. A ValueError when they are not the VQ-VAE's training images (their pixel variance
    is not `variance`, the one its checkpoint records) and no --image-size says to take
    them anyway, or when there are fewer than --batch-size."""
    splits = load_training_images(args, batch_size)
    measured = training_variance(splits.train)  # exact: from the counts of byte values
    if not math.isclose(measured, variance, rel_tol=1e-9):
        differ = (
            f"these are not the images the VQ-VAE trained on: their pixel variance is "
            f"{measured:.6f}, its checkpoint records {variance:.6f}"
        )
        if args.image_size is None:
            raise ValueError(
                f"{differ}. Pass the --data and --image-size it trained with, or an "
                "--image-size to train the prior on other images"
            )
        print(f"note: {differ}")
    return splits


def codes_in_out(args: argparse.Namespace, vqvae: VQVAE, splits: ImageSplits) -> CodeSplits:
    """The codes of the images, kept in --out/codes.pt; --out is first checked and locked as
    `fit` will check it, so that a folder it would refuse gets nothing written into it."""
    with Checkpoints(args.out, args.resume):
        return cached_codes(vqvae, splits, args.out / "codes.pt")


def train_prior(args: argparse.Namespace, config: TrainConfig, preset: str):
    """Load the VQ-VAE and its images, encode them (cached in --out), train or resume the
    prior. Returns the VQ-VAE, the prior's task and its run."""
    device = resolve_device(config.device)
    vqvae, data_variance = load_vqvae(args.vqvae, device)
    splits = load_images(args, config.batch_size, data_variance)
    codes = codes_in_out(args, vqvae, splits)
    # the preset's sizes for the chapter's priors, a registered prior's own defaults else
    sized = PRIOR_MODELS[preset].get(args.prior, PriorConfig(args.prior))
    prior_config = replace(
        sized,
        num_codes=codes.num_codes,
        num_classes=len(splits.classes),
        grid=tuple(codes.train.shape[1:]),
    )
    print(f"prior {prior_config} on {hardware(device)}: {config}")
    task = PriorTask(prior_config, config, codes)
    return vqvae, task, fit(task, config, args.out, args.resume)


def main(argv: list[str] | None = None) -> int:
    """Encode the images, train (or resume) the prior, sample 10 images per class. Returns
    the exit status: 0 done, 1 an error that the message explains, 130 after Ctrl-C and 143
    after SIGTERM (the run saved first)."""
    args_parser = parser()
    args = args_parser.parse_args(argv)
    preset, config = prior_training_config(args, args_parser.error)
    try:
        vqvae, task, run = train_prior(args, config, preset)
        print(f"trained {run.step} steps in {run.elapsed_s:.0f} s")
        num_codes = task.model.num_codes
        bits_text = f"{run.test['bits_per_code']:.3f} bits per code"
        print(f"test: {bits_text} (uniform: {math.log2(num_codes):.3f})")
        labels = torch.arange(task.model.num_classes).repeat_interleave(10)  # 10 per class
        generator = torch.Generator().manual_seed(config.seed)
        grid = tuple(task.codes.train.shape[1:])
        sampled = sample(task.model, labels, grid, args.temperature, generator, args.guidance)
        path = save_png(decode_codes(vqvae, sampled), args.out / "samples.png", nrow=10)
    except (OSError, ValueError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {describe(error)}", file=sys.stderr)  # a missing file, bad input
        return 1
    except KeyboardInterrupt as error:  # TrainingInterrupted says what was saved
        what = str(error) or "interrupted before training; no checkpoint was written"
        print(what, file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
    print(f"checkpoint: {args.out / CHECKPOINT}\nsamples (one row per class): {path}")
    return 0


if __name__ == "__main__" and "ipykernel" not in sys.modules:  # python -m vqvae_lite.prior
    sys.exit(main())
