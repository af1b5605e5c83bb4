"""Ship a trained run with the package: its weights in vqvae_lite/weights/NAME.pt and an entry
in vqvae_lite/weights/manifest.json with the file's sha256 and the run's provenance.

    python tools/ship_weights.py vqvae NAME CHECKPOINT --command "python -m vqvae_lite ..."
        --commit HASH --hardware "CPU (...), 2 threads"
    python tools/ship_weights.py prior NAME CHECKPOINT --vqvae default --command "..." ...

The weights are stored in float16 when the test metrics re-evaluated from float16 weights
match float32's (a VQ-VAE's PSNR to 0.01 dB, a prior's bits per code to 0.001 bits), else in
float32. The metrics of record are those of the shipped weights, measured on the whole test
split; a prior is measured on the codes of the shipped VQ-VAE it names.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from vqvae_lite.checkpoint import load_checkpoint
from vqvae_lite.code_dataset import encode_splits
from vqvae_lite.data import load_cifar10
from vqvae_lite.likelihood import position_bits
from vqvae_lite.metrics import evaluate
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.safe_files import save_atomically
from vqvae_lite.shipped import (
    MANIFEST,
    WEIGHTS_FORMAT,
    as_float32,
    file_sha256,
    load_vqvae,
    weights_folder,
)
from vqvae_lite.shipped_priors import prior_from_state

PSNR_TOLERANCE_DB = 0.01
BITS_TOLERANCE = 0.001


def as_float16(weights: dict) -> dict:
    """A state dict with its floating tensors in float16."""
    return {key: t.half() if t.is_floating_point() else t for key, t in weights.items()}


def vqvae_metrics(config: dict, weights: dict, variance: float, test_images) -> dict:
    """The test metrics of a VQ-VAE with these weights (float16 ones are widened first)."""
    model = VQVAE(ModelConfig(**config))
    model.load_state_dict(as_float32(weights))
    metrics = evaluate(model.eval(), test_images, variance)
    return {key: value for key, value in metrics.items() if key != "code_counts"}


def prior_metrics(config: dict, weights: dict, codes) -> dict:
    """A prior's test bits per code on `codes` (a CodeSplits)."""
    prior = prior_from_state(config, weights, "cpu")
    return {"bits_per_code": position_bits(prior, codes.test, codes.test_labels).mean().item()}


def training_curve(history: list[dict], every: int = 500) -> list[dict]:
    """The run's logged rows every `every` steps (and every row with a test evaluation): the
    step, the training loss and the test measures, rounded; enough to compare a rerun with."""
    curve = []
    for row in history:
        test = {
            k: round(v, 5) for k, v in row.get("test", {}).items() if isinstance(v, float | int)
        }
        if row["step"] % every == 0 or test:
            curve.append(
                {"step": row["step"], "loss": round(row["loss"], 5)}
                | ({"test": test} if test else {})
            )
    return curve


def choose_precision(measure, weights: dict, key: str, tolerance: float) -> tuple[dict, dict]:
    """(weights to ship, their metrics): float16 when `measure`'s `key` moves by at most
    `tolerance` from float32's, else float32. Both measurements are kept in the metrics."""
    full, half = measure(weights), measure(as_float16(weights))
    keep_half = abs(half[key] - full[key]) <= tolerance
    shipped = (as_float16(weights), half) if keep_half else (weights, full)
    print(
        f"{key}: float32 {full[key]:.4f}, float16 {half[key]:.4f} -> "
        f"{'float16' if keep_half else 'float32'}"
    )
    return shipped[0], shipped[1] | {f"float32_{key}": full[key]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["vqvae", "prior"])
    parser.add_argument("name", help="the name it is shipped under, e.g. default")
    parser.add_argument("checkpoint", type=Path, help="the run's checkpoint.pt")
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--commit", required=True, help="the commit it trained with")
    parser.add_argument("--hardware", required=True, help="where it trained")
    parser.add_argument("--vqvae", help="for a prior: the shipped VQ-VAE whose codes it models")
    parser.add_argument("--data", help="CIFAR-10's folder or archive (default: as load_cifar10)")
    args = parser.parse_args(argv)
    if args.kind == "prior" and not args.vqvae:
        parser.error("a prior needs --vqvae, the shipped VQ-VAE whose codes it models")

    state = load_checkpoint(args.checkpoint)
    splits = load_cifar10(args.data)
    torch.manual_seed(0)
    if args.kind == "vqvae":
        config, variance = state["identity"]["model_config"], state["identity"]["data_variance"]
        measure = lambda w: vqvae_metrics(config, w, variance, splits.test)  # noqa: E731
        weights, metrics = choose_precision(measure, state["model"], "psnr", PSNR_TOLERANCE_DB)
        extra = {"data_variance": variance}
        training = {"train_nmse": round(state["history"][-1]["nmse"], 5)}  # last log window
    else:
        config = state["identity"]["prior_config"]
        vqvae, _ = load_vqvae(args.vqvae)
        codes = encode_splits(vqvae, splits)
        measure = lambda w: prior_metrics(config, w, codes)  # noqa: E731
        weights, metrics = choose_precision(
            measure, state["model"], "bits_per_code", BITS_TOLERANCE
        )
        extra = {"vqvae": args.vqvae}
        training = {}

    folder = weights_folder()
    path = folder / f"{args.name}.pt"
    save_atomically({"format": WEIGHTS_FORMAT, "config": config, "weights": weights} | extra, path)
    train_config = state["train_config"]
    provenance = (
        {
            "command": args.command,
            "commit": args.commit,
            "hardware": args.hardware,
            "wall_time_s": round(state["elapsed_s"]),
            "steps": state["step"],
            "batch_size": train_config["batch_size"],
            "images_seen": state["step"] * train_config["batch_size"],
            "epochs": round(state["step"] * train_config["batch_size"] / len(splits.train), 2),
            "test_split": f"{len(splits.test)} images of {splits.source}",
            "test": {key: round(value, 5) for key, value in metrics.items()},
            "curve": training_curve(state["history"]),
        }
        | training
        | extra
    )
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[args.name] = {
        "file": path.name,
        "kind": args.kind,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "provenance": provenance,
    }
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    print(f"shipped {args.name}: {path.stat().st_size / 1e6:.2f} MB, {provenance['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
