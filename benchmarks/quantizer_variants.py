"""Chapter 9's comparison: FSQ, the rotation trick and residual VQ against chapter 7's default.

    python benchmarks/quantizer_variants.py [--steps 50] [--seeds 3] [--variants NAME ...]

Trains each variant of `vqvae_lite.quantizer_variants.quantizer_variants` (plain VQ, EMA +
restart, the rotation trick at EMA decay 0.99 and 0.8, FSQ with 512 and 4,375 codes, residual
VQ with two stages of 512) one after the other with `vqvae_lite.train.train`, from the CPU
preset with the same batch size and number of steps, once per seed (all the variants with
seed 0, then all with seed 1, ..), and prints the chapter's table (`format_table`): bits per
image, test PSNR as mean (min-max) over the seeds, NMSE, share of codes used, perplexity (per
stage for residual VQ) and seconds per step as a ratio to the baseline's run with the same
seed. The baseline is EMA + restart of the same process. The last lines (`verdicts`) name the
best PSNR, the most codes used and the fewest seconds per step only where the winner's seed
range does not overlap the others', and compare each variant with the baseline.
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


def mean(values) -> float:
    return sum(values) / len(values)


def spread(values, digits: int = 2) -> str:
    """Mean and min-max of one quantity over the seeds: "18.89 (18.62-19.17)"."""
    return f"{mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def per_seed(rows: dict[str, list[dict]], baseline: str) -> dict[str, dict[str, list[float]]]:
    """For each variant, one value per seed of: test PSNR, share of codes used (%), and seconds
    per step divided by the baseline's seconds per step with the same seed, in the same process."""
    return {
        name: {
            "psnr": [run["psnr"] for run in runs],
            "share": [100 * run["codes_used"] / run["num_codes"] for run in runs],
            "speed": [
                run["step_s"] / base["step_s"]
                for run, base in zip(runs, rows[baseline], strict=True)
            ],
        }
        for name, runs in rows.items()
    }


def format_table(rows: dict[str, list[dict]], baseline: str = "EMA + restart") -> str:
    """The comparison table: one line per variant, from its rows of `measure`, one per seed.

    Every column is over all the seeds: test PSNR, share of codes used and time per step as mean
    (min-max); NMSE and perplexity as means. Time per step is a ratio to the baseline's run with
    the same seed, both measured in the same process. Rows must hold the same seeds, in order.
    """
    values = per_seed(rows, baseline)
    lines = [
        f"{'variant':>20} | bits/image | {'test PSNR, dB':>19} |   NMSE | "
        f"{'codes used, %':>19} |   K    | perplexity | {'s/step / baseline':>16} | seeds"
    ]
    for name, runs in rows.items():
        first = runs[0]
        lines.append(
            f"{name:>20} | {first['bits']:10.0f} | {spread(values[name]['psnr']):>19} | "
            f"{mean([run['nmse'] for run in runs]):.4f} | "
            f"{spread(values[name]['share'], 1):>19} | {first['num_codes']:<6} | "
            f"{mean([run['perplexity'] for run in runs]):10.1f} | "
            f"{spread(values[name]['speed']):>16} | {len(runs)}"
        )
        for stage in range(len(first.get("stage_perplexity", []))):  # residual VQ
            share = [100 * run["stage_codes_used"][stage] / run["stage_size"] for run in runs]
            ppl = mean([run["stage_perplexity"][stage] for run in runs])
            lines.append(
                f"{f'stage {stage + 1}':>20} | {'':39} | {spread(share, 1):>19} | "
                f"{first['stage_size']:<6} | {ppl:10.1f} |"
            )
    step_s = [run["step_s"] for run in rows[baseline]]
    lines.append(f"{'':>20}   baseline {baseline}: {spread(step_s, 3)} s/step")
    return "\n".join(lines)


def verdicts(rows: dict[str, list[dict]], baseline: str = "EMA + restart") -> list[str]:
    """Which variant wins what, named only where its seed range does not overlap the others'.

    Best PSNR and most codes used among the variants with the baseline's bits per image; fewest
    seconds per step (as a ratio to the baseline) among all. Then each variant against the
    baseline: beyond the noise only where the two seed ranges do not overlap.
    """
    values = per_seed(rows, baseline)
    bits = {name: runs[0]["bits"] for name, runs in rows.items()}
    equal = [name for name in rows if bits[name] == bits[baseline]]
    lines = []
    for key, what, names, higher, digits in [
        ("psnr", f"best test PSNR (dB) at {bits[baseline]:.0f} bits/image", equal, True, 2),
        ("share", f"most codes used (%) at {bits[baseline]:.0f} bits/image", equal, True, 1),
        ("speed", "fewest seconds per step (ratio to the baseline)", list(rows), False, 2),
    ]:
        sign = 1 if higher else -1
        best = max(names, key=lambda name: sign * mean(values[name][key]))
        low, high = min(values[best][key]), max(values[best][key])
        others = [name for name in names if name != best]
        if higher:
            rival = max(others, key=lambda name: max(values[name][key]))
            clear = low > max(values[rival][key])
        else:
            rival = min(others, key=lambda name: min(values[name][key]))
            clear = high < min(values[rival][key])
        verdict = (
            "beyond every other seed range" if clear and len(rows[best]) > 1 else "within noise"
        )
        lines.append(
            f"{what}: {best}, {spread(values[best][key], digits)}; nearest range "
            f"{rival}, {spread(values[rival][key], digits)}: {verdict}"
        )
    base = values[baseline]
    for name in rows:
        if name == baseline:
            continue
        mine = values[name]
        gain = mean(mine["psnr"]) - mean(base["psnr"])
        apart = min(mine["psnr"]) > max(base["psnr"]) or max(mine["psnr"]) < min(base["psnr"])
        speed = (
            "faster"
            if max(mine["speed"]) < 1
            else "slower"
            if min(mine["speed"]) > 1
            else "within noise"
        )
        lines.append(
            f"{name}: {bits[name] - bits[baseline]:+4.0f} bits/image, PSNR {gain:+.2f} dB "
            f"({'beyond' if apart else 'within'} noise), time per step "
            f"{spread(mine['speed'])} x the baseline's ({speed})"
        )
    return lines


def main() -> None:
    variants = quantizer_variants()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per run (default: 50)")
    parser.add_argument(
        "--seeds", type=int, default=3, help="runs per variant, seeds 0, 1, .. (default: 3)"
    )
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
    rows = {name: [] for name in names}
    for seed in range(args.seeds):  # every variant once per seed, the baseline first
        for name in names:
            result = train(variants[name], replace(base, seed=seed), splits)
            rows[name].append(measure(result))
            print(f"seed {seed}, {name}: {result.wall_time_s:.0f} s", flush=True)

    print()
    print(format_table(rows, BASELINE))
    print()
    if args.seeds < 2:  # one run per variant: no seed range, so no winner and no noise
        print("one seed: no seed ranges, so no verdicts (use --seeds 3)")
    else:
        print("\n".join(verdicts(rows, BASELINE)))


if __name__ == "__main__":
    main()
