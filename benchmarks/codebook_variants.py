"""Chapter 7's comparison: the codebook variants trained for the same number of steps on CIFAR-10.

    python benchmarks/codebook_variants.py [--steps 300] [--batch-size 128] [--data PATH]

Trains each variant of `vqvae_lite.codebook_upkeep.variants()` (plain VQ, EMA, EMA + dead-code
restarts, k-means init + restarts) one after the other with `vqvae_lite.train.train`, from the
CPU preset with the same seed, batch size and number of steps, and prints a table of test-split
PSNR, NMSE, perplexity, codes used and wall time. The baseline is plain VQ of the same run: the
last columns are each variant's PSNR gain over it and its ratio of codes used.
"""

import argparse
import os
import time
from dataclasses import replace

import torch

from vqvae_lite.codebook_upkeep import variants
from vqvae_lite.data import load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.train import PRESETS, train

STEPS_ENV = "VQVAE_LITE_STEPS"  # the chapter reads the same variable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=int(os.environ.get(STEPS_ENV, 300)))
    parser.add_argument("--batch-size", type=int, default=PRESETS["cpu"].batch_size)
    parser.add_argument("--data", help="image folder or .tar.gz (default: as load_cifar10)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--restart-dead-after", type=int, default=20, metavar="STEPS")
    names = list(variants())
    parser.add_argument("--variants", nargs="*", choices=names, default=names)
    args = parser.parse_args()
    configs = variants(args.restart_dead_after)

    splits = load_cifar10(args.data)
    base = replace(
        PRESETS["cpu"],
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
        time_budget_s=None,  # equal steps, not equal seconds: robust to a busy machine
        log_every=max(1, args.steps // 20),
        checkpoint_every=args.steps,
    )
    print(
        f"{len(splits.train)} train / {len(splits.test)} test images ({splits.source}); "
        f"{args.steps} steps of {args.batch_size} images per variant on "
        f"{hardware(resolve_device(args.device))}, torch {torch.__version__}"
    )
    rows = []
    for name in args.variants:
        start = time.perf_counter()
        result = train(configs[name], base, splits)
        rows.append((name, result.test, time.perf_counter() - start, result.wall_time_s))
        print(f"{name}: done in {rows[-1][2]:.0f} s", flush=True)

    baseline = rows[0][1]
    header = "| variant | test PSNR (dB) | NMSE | perplexity | codes used | train s | total s |"
    header += " PSNR gain (dB) | codes used ratio |"
    print(f"\n{header}\n|{'---|' * header.count(' |')}")
    for name, test, total_s, train_s in rows:
        print(
            f"| {name} | {test['psnr']:.2f} | {test['nmse']:.4f} | {test['perplexity']:.1f} | "
            f"{test['codes_used']} | {train_s:.0f} | {total_s:.0f} | "
            f"{test['psnr'] - baseline['psnr']:+.2f} | "
            f"{test['codes_used'] / baseline['codes_used']:.2f} |"
        )


if __name__ == "__main__":
    main()
