# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Metrics: test-split NMSE, PSNR, perplexity and codes used.

Chapter 6 (`notebooks/06_training.ipynb`) checks each metric by hand and evaluates with them.
"""

import math

import torch
from torch import nn

from vqvae_lite.codebook import code_counts, codes_used, perplexity
from vqvae_lite.data import from_training_scale, to_training_scale


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(peak^2 / MSE), for pixels in [0, peak]."""
    return 10.0 * math.log10(peak**2 / mse)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, data_variance: float, batch_size: int = 500
) -> dict:
    """Reconstruct every image of a split, (N, 3, H, W) uint8, and measure over the whole split:

    - `nmse`: MSE on the training scale [-1, 1] divided by the training-set variance;
    - `psnr`: PSNR in dB of the reconstructions clamped to [0, 1], as they are displayed;
    - `perplexity` and `codes_used` of all N*h*w code indices, and `code_counts` (K,).
    """
    was_training = model.training
    model.eval()  # an EMA codebook must not learn from the test split
    device = next(model.parameters()).device
    squared_error, squared_error_01, indices = 0.0, 0.0, []
    for batch in images.split(batch_size):
        x = to_training_scale(batch.to(device)).contiguous(memory_format=torch.channels_last)
        output = model(x)
        x_hat = output.x_hat.float()
        squared_error += (x_hat - x).square().sum().item()
        error_01 = from_training_scale(x_hat) - from_training_scale(x)  # clamped to [0, 1]
        squared_error_01 += error_01.square().sum().item()
        indices.append(output.indices.flatten().cpu())  # (B, h, w) -> (B*h*w,)
    model.train(was_training)
    indices = torch.cat(indices)
    num_codes = model.config.num_codes
    return {
        "nmse": squared_error / images.numel() / data_variance,
        "psnr": psnr(squared_error_01 / images.numel()),
        "perplexity": perplexity(indices, num_codes),
        "codes_used": codes_used(indices, num_codes),
        "code_counts": code_counts(indices, num_codes),
    }


def format_metrics(metrics: dict) -> str:
    """One line for the test metrics of `evaluate`."""
    return (
        f"NMSE {metrics['nmse']:.4f} | PSNR {metrics['psnr']:.2f} dB | "
        f"perplexity {metrics['perplexity']:.1f} | codes used {metrics['codes_used']}"
    )
