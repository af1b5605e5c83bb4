"""Chapter 9's comparison: FSQ, the rotation trick and residual VQ against chapter 7's default.

    python benchmarks/quantizer_variants.py [--steps 50] [--seeds 1] [--variants NAME ...]

Trains each variant of `vqvae_lite.quantizer_variants.quantizer_variants` (plain VQ, EMA +
restart, the rotation trick at EMA decay 0.99 and 0.8, FSQ with 512 and 4,375 codes, residual
VQ with two stages of 512) one after the other with `vqvae_lite.train.train`, from the CPU
preset with the same batch size and number of steps, once per seed, and prints the chapter's
table (`format_table`): bits per image, test PSNR and NMSE, codes used, perplexity (per stage
for residual VQ) and seconds per step. The baseline is EMA + restart of the same run: the last
lines give each variant's PSNR gain over it and its ratio of seconds per step.
"""

import argparse
from dataclasses import replace

import torch

from vqvae_lite.data import load_cifar10
from vqvae_lite.loop import hardware, resolve_device
from vqvae_lite.quantizer_variants import format_table, measure, quantizer_variants
from vqvae_lite.train import PRESETS, train

BASELINE = "EMA + restart"


def main() -> None:
    variants = quantizer_variants()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per run (default: 50)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds 0, 1, ..")
    parser.add_argument("--batch-size", type=int, default=PRESETS["cpu"].batch_size)
    parser.add_argument("--data", help="image folder or .tar.gz (default: as load_cifar10)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--variants", nargs="*", choices=list(variants), default=list(variants))
    args = parser.parse_args()
    names = [BASELINE] + [name for name in args.variants if name != BASELINE]

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
        f"{args.steps} steps of {args.batch_size} images per run, {args.seeds} seed(s), on "
        f"{hardware(resolve_device(args.device))}, torch {torch.__version__}"
    )
    rows = {}
    for name in names:
        for seed in range(args.seeds):
            result = train(variants[name], replace(base, seed=seed), splits)
            rows.setdefault(name, []).append(measure(result))
            print(f"{name}, seed {seed}: {result.wall_time_s:.0f} s", flush=True)

    print()
    print(format_table(rows))
    baseline = rows[BASELINE]
    psnr = {name: sum(row["psnr"] for row in runs) / len(runs) for name, runs in rows.items()}
    print(f"\nagainst {BASELINE} of the same run:")
    for name, runs in rows.items():
        ratio = runs[0]["step_s"] / baseline[0]["step_s"]
        print(
            f"{name:>20}: PSNR {psnr[name] - psnr[BASELINE]:+.2f} dB, "
            f"{runs[0]['bits'] - baseline[0]['bits']:+5.0f} bits per image, "
            f"{ratio:.2f}x the seconds per step"
        )


if __name__ == "__main__":
    main()
