"""The shipped reference models, re-evaluated on the whole CIFAR-10 test split, beside the best
published numbers at their setting and the book's targets.

    python benchmarks/reference_models.py [--data PATH] [--device cpu]

Anchors (each measured on another model or another recipe; the column says what):
- the Sonnet VQ-VAE example: NMSE 0.056, a running mean over its training batches after
  10,000 updates of 32 images; ours is the mean over the last log window of training batches;
- CVQ-VAE (Zheng & Vedaldi, 2023): 24.72 dB test PSNR with 8x8 latents and 512 codes of 64;
- the VQ-VAE paper (van den Oord et al., 2017), Table 1: 4.67 bits/dim on CIFAR-10, ours the
  bound of chapter 8 (a discretised Gaussian decoder of one sigma, and the best shipped prior).
"""

import argparse

import torch

from vqvae_lite.code_dataset import encode_splits
from vqvae_lite.data import load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.likelihood import bits_per_dim, fit_sigma, position_bits, reconstruction_bits
from vqvae_lite.metrics import evaluate
from vqvae_lite.shipped import load_vqvae, manifest, provenance, shipped_names
from vqvae_lite.shipped_priors import pretrained_prior

SONNET_TRAIN_NMSE = 0.056
CVQ_VAE_PSNR = 24.72
PAPER_BITS_PER_DIM = 4.67
TARGETS = {"default PSNR": ">= 25.0", "transformer bits/code": "<= 7.0"}


def target(name: str, measure: str) -> str:
    """The book's target for this model's measure, if it has one, as a column entry."""
    goal = TARGETS.get(f"{name} {measure}")
    return f"; target {goal}" if goal else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder or .tar.gz (default: as load_cifar10)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    splits = load_cifar10(args.data)
    sizes = sum(entry["bytes"] for entry in manifest().values())
    print(
        f"{len(splits.test)} test images of {splits.source}, on {hardware(device)}; "
        f"shipped files: {sizes / 1e6:.2f} MB in all (budget 15 MB)"
    )
    print(
        f"{'model':>12} | {'steps x batch':>13} | measure                  | {'ours':>7} | anchor"
    )
    for name in shipped_names("vqvae"):
        model, variance = load_vqvae(name, device)
        made = provenance(name)
        test = evaluate(model, splits.test, variance)
        size = f"{made['steps']} x {made['batch_size']}"
        rows = [
            ("test PSNR (dB)", f"{test['psnr']:7.2f}",
             f"CVQ-VAE {CVQ_VAE_PSNR}{target(name, 'PSNR')}"),
            ("test NMSE", f"{test['nmse']:7.4f}", ""),
            ("train NMSE, last window", f"{made['train_nmse']:7.4f}",
             f"Sonnet {SONNET_TRAIN_NMSE} (10,000 x 32)"),
            ("codes used of 512", f"{test['codes_used']:7d}", ""),
        ]  # fmt: skip
        for i, (measure, ours, anchor) in enumerate(rows):
            print(
                f"{name if i == 0 else '':>12} | {size if i == 0 else '':>13} | "
                f"{measure:<24} | {ours} | {anchor}"
            )
    model, _ = load_vqvae("default", device)
    codes = encode_splits(model, splits)
    sigma = fit_sigma(model, splits.train[:10000])
    recon_bits = reconstruction_bits(model, splits.test, sigma)
    for name in shipped_names("prior"):
        made = provenance(name)
        prior = pretrained_prior(name, device)
        with torch.no_grad():
            code_bits = position_bits(prior, codes.test, codes.test_labels).mean().item()
        size = f"{made['steps']} x {made['batch_size']}"
        print(
            f"{name:>12} | {size:>13} | {'test bits per code':<24} | {code_bits:7.3f} | "
            f"{target(name, 'bits/code').lstrip('; ')}"
        )
        print(
            f"{'':>12} | {'':>13} | {'bound, bits/dim':<24} | "
            f"{bits_per_dim(recon_bits, 64 * code_bits):7.3f} | paper {PAPER_BITS_PER_DIM}"
        )
    print(
        f"decoder sigma {sigma:.4f} on the training scale; the bound's decoder term alone is "
        f"{recon_bits / (3 * 32 * 32):.3f} bits/dim"
    )


if __name__ == "__main__":
    main()
