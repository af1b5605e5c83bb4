# Generated from notebooks/09_beyond_the_codebook.ipynb by tools/export.py: edit the notebook.
"""The quantisers of chapters 7 and 9 side by side: the variants and one row of measurements.

Chapter 9 (`notebooks/09_beyond_the_codebook.ipynb`) trains them on CIFAR-10;
`benchmarks/quantizer_variants.py` prints the same table from the command line.
"""

import math

import torch

from vqvae_lite.codebook_upkeep import variants
from vqvae_lite.model import ModelConfig
from vqvae_lite.train import TrainResult


def quantizer_variants(restart_dead_after: int = 20) -> dict[str, ModelConfig]:
    """Plain VQ, chapter 7's default, the rotation trick, FSQ and residual VQ, by name."""
    restart = {"restart_dead_after": restart_dead_after}
    return {
        "plain VQ": ModelConfig(quantizer="vq"),
        "EMA + restart": variants(restart_dead_after)["EMA + restart"],
        "rotation, decay 0.99": ModelConfig(
            quantizer="rotation", quantizer_options=restart | {"decay": 0.99}
        ),
        "rotation, decay 0.8": ModelConfig(
            quantizer="rotation", quantizer_options=restart | {"decay": 0.8}
        ),
        "FSQ [8,8,8]": ModelConfig(
            num_codes=512, quantizer="fsq", quantizer_options={"levels": [8, 8, 8]}
        ),
        "FSQ [7,5,5,5,5]": ModelConfig(
            num_codes=4375, quantizer="fsq", quantizer_options={"levels": [7, 5, 5, 5, 5]}
        ),
        "RVQ 2 x 512": ModelConfig(
            num_codes=512**2, quantizer="rvq", quantizer_options=restart | {"stages": 2}
        ),
    }


def perplexity_of_counts(counts: torch.Tensor) -> float:
    """exp(entropy) of the code usage given by counts (K,), as chapter 2's `perplexity`."""
    probs = counts.double() / counts.sum()
    return (-(probs * probs.clamp_min(1e-30).log()).sum()).exp().item()


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
    if hasattr(quantizer, "stage_counts"):  # residual VQ: the usage of each stage too
        stages = quantizer.stage_counts(test["code_counts"])  # (stages, K)
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
