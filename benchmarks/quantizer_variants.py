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
import math
from dataclasses import replace

import torch

from vqvae_lite.codebook import perplexity_of_counts
from vqvae_lite.data import load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.quantizer_variants import quantizer_variants
from vqvae_lite.train import PRESETS, TrainResult, train

BASELINE = "EMA + restart"


def measure(result: TrainResult, positions: int = 64) -> dict:
    """One row for a trained model: test metrics, usage, bits per image, seconds per step.

    `positions` is the number of codes per image: 8 x 8 for a 32 x 32 image.
    """
    quantizer, test = result.model.quantizer, result.test
    row = {
        "psnr": test["psnr"],
        "nmse": test["nmse"],
        "codes_used": test["codes_used"],
        "num_codes": quantizer.num_codes,
        "perplexity": test["perplexity"],
        "bits": positions * math.log2(quantizer.num_codes),
        "step_s": result.wall_time_s / max(result.steps, 1),
    }
    stages = quantizer.stage_counts(test["code_counts"])  # (stages, K)
    if len(stages) > 1:  # residual VQ: the usage of each stage too
        row["stage_size"] = stages.shape[1]
        row["stage_codes_used"] = [int((counts > 0).sum()) for counts in stages]
        row["stage_perplexity"] = [perplexity_of_counts(counts) for counts in stages]
    return row


def format_table(rows: dict[str, list[dict]]) -> str:
    """The comparison table: one line per variant, from its rows of `measure`, one per seed.

    PSNR and NMSE are means over the seeds, "range" is max - min of the PSNR over them; codes
    used, perplexity and time per step are those of the first seed.
    """
    lines = [
        f"{'variant':>20} | bits/image | PSNR (dB) | range |   NMSE | "
        f"{'codes used':>19} | perplexity | s/step | seeds"
    ]
    for name, runs in rows.items():
        psnr, first = [run["psnr"] for run in runs], runs[0]
        spread = f"{max(psnr) - min(psnr):5.2f}" if len(runs) > 1 else "    -"
        nmse = sum(run["nmse"] for run in runs) / len(runs)
        share = 100 * first["codes_used"] / first["num_codes"]
        used = f"{first['codes_used']}/{first['num_codes']} {share:3.0f}%"
        lines.append(
            f"{name:>20} | {first['bits']:10.0f} | {sum(psnr) / len(psnr):9.2f} | {spread} | "
            f"{nmse:.4f} | {used:>19} | {first['perplexity']:10.1f} | "
            f"{first['step_s']:6.3f} | {len(runs)}"
        )
        for stage, stage_ppl in enumerate(first.get("stage_perplexity", []), start=1):
            n, size = first["stage_codes_used"][stage - 1], first["stage_size"]
            used = f"{n}/{size} {100 * n / size:3.0f}%"
            lines.append(f"{f'stage {stage}':>20} | {'':44} | {used:>19} | {stage_ppl:10.1f} |")
    return "\n".join(lines)


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
