"""Chapter 8's comparison: the priors over the codes of one trained VQ-VAE, at the same budget.

    python benchmarks/prior_comparison.py --vqvae runs/cpu/checkpoint.pt [--steps N]
        [--preset cpu] [--out runs/prior_comparison] [--data PATH]

Encodes CIFAR-10 with the VQ-VAE, then measures on the test split the uniform and unigram
priors and trains the gated PixelCNN and the causal transformer of `PRIOR_MODELS` for the
same number of steps with the same recipe. Prints each prior's test bits per code, its gain
over the unigram prior of the same run (the baseline), and the bound of the whole model in
bits per dimension; writes ten samples per class of the best prior to `OUT/samples.png`.
"""

import argparse
import math
import os
from dataclasses import replace
from pathlib import Path

import torch

from vqvae_lite.code_dataset import decode_codes, encode_splits
from vqvae_lite.data import load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.likelihood import (
    UnigramPrior,
    bits_per_code,
    bits_per_dim,
    fit_sigma,
    reconstruction_bits,
)
from vqvae_lite.loop import fit
from vqvae_lite.prior_registry import parameter_count
from vqvae_lite.prior_task import PRIOR_MODELS, PRIOR_PRESETS, PriorTask
from vqvae_lite.sampling import sample, save_png
from vqvae_lite.train import load_model

STEPS_ENV = "VQVAE_LITE_STEPS"  # the chapter reads the same variable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqvae", type=Path, required=True, help="a trained VQ-VAE checkpoint")
    parser.add_argument("--preset", choices=sorted(PRIOR_PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, default=os.environ.get(STEPS_ENV))
    parser.add_argument("--out", type=Path, default=Path("runs/prior_comparison"))
    parser.add_argument("--data", help="image folder or .tar.gz (default: as load_cifar10)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    args = parser.parse_args()
    config = PRIOR_PRESETS[args.preset]
    config = replace(config, steps=int(args.steps or config.steps), device=args.device)

    device = resolve_device(config.device)
    model, _ = load_model(args.vqvae, device)
    splits = load_cifar10(args.data)
    codes = encode_splits(model, splits)
    sigma = fit_sigma(model, splits.train[:10000])
    recon_bits = reconstruction_bits(model, splits.test, sigma)
    num_codes = codes.num_codes
    counts = torch.bincount(codes.train.flatten(), minlength=num_codes)
    rows = {}
    for name, prior in [
        ("uniform", UnigramPrior(torch.ones(num_codes))),
        ("unigram", UnigramPrior(counts)),
    ]:
        rows[name] = (bits_per_code(prior, codes.test, codes.test_labels), 0, 0.0)
    trained = {}
    for kind, prior_config in PRIOR_MODELS[args.preset].items():
        task = PriorTask(prior_config, config, codes)
        run = fit(task, config, args.out / kind)
        trained[kind] = task.model
        rows[kind] = (run.test["bits_per_code"], parameter_count(task.model), run.elapsed_s)

    print(
        f"{len(splits.test)} test images, K = {num_codes}; {config.steps} steps of "
        f"{config.batch_size} code grids per prior on {hardware(device)}"
    )
    print(
        f"decoder: sigma {sigma:.4f}, {recon_bits / 3072:.3f} bits/dim; uniform code term "
        f"{64 * math.log2(num_codes):.0f} bits per image"
    )
    print(f"{'prior':>12} | {'params':>9} | train s | bits/code | vs unigram | bits/dim")
    baseline = rows["unigram"][0]
    for name, (bits, params, seconds) in rows.items():
        print(
            f"{name:>12} | {params:9,d} | {seconds:7.0f} | {bits:9.3f} | "
            f"{baseline - bits:+10.3f} | {bits_per_dim(recon_bits, 64 * bits):8.4f}"
        )
    best = min(trained, key=lambda kind: rows[kind][0])
    labels = torch.arange(len(splits.classes)).repeat_interleave(10)
    sampled = sample(
        trained[best],
        labels,
        tuple(codes.train.shape[1:]),
        generator=torch.Generator().manual_seed(0),
    )
    path = save_png(decode_codes(model, sampled), args.out / "samples.png", nrow=10)
    print(f"samples of the {best} prior, one row per class: {path}")


if __name__ == "__main__":
    main()
