# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Metrics: test-split NMSE, PSNR, perplexity and codes used, from sums that add up over the
parts of a split.

Chapter 6 (`notebooks/06_training.ipynb`) checks each metric by hand and evaluates with them.
"""

import math
from contextlib import contextmanager

import torch
from torch import nn

from vqvae_lite.codebook import code_counts, perplexity_of_counts
from vqvae_lite.training_scale import from_training_scale, to_training_scale


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(peak^2 / MSE), for pixels in [0, peak]."""
    return 10.0 * math.log10(peak**2 / mse)


@contextmanager
def evaluation_mode(module: nn.Module):
    """`module` in eval mode inside the block, and back in its previous mode after, however
    the block ends: an EMA codebook must not learn from the images it is measured on."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def reconstruction_sums(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> dict:
    """Reconstruct every image, (N, 3, H, W) uint8, in eval mode, and sum what the metrics need:

    - `squared_error`: squared errors on the training scale [-1, 1];
    - `squared_error_01`: squared errors of the reconstructions clamped to [0, 1];
    - `values`: how many pixel values were summed, N*3*H*W;
    - `code_counts`: (K,) int64, how often each of the quantiser's K codes was picked.

    Sums of parts of a split add up to the sums of the whole split.
    """
    device = next(model.parameters()).device
    num_codes = model.quantizer.num_codes  # the index space (residual VQ: more than a codebook)
    squared_error, squared_error_01 = 0.0, 0.0
    counts = torch.zeros(num_codes, dtype=torch.int64)
    with evaluation_mode(model):
        for batch in images.split(batch_size):
            x = to_training_scale(batch.to(device)).contiguous(memory_format=torch.channels_last)
            output = model(x)
            x_hat = output.x_hat.float()
            squared_error += (x_hat - x).square().sum().item()
            error_01 = from_training_scale(x_hat) - from_training_scale(x)  # clamped to [0, 1]
            squared_error_01 += error_01.square().sum().item()
            counts += code_counts(output.indices.cpu(), num_codes)  # (B, h, w) -> (K,)
    return {
        "squared_error": squared_error,
        "squared_error_01": squared_error_01,
        "values": images.numel(),
        "code_counts": counts,
    }


def metrics_from_sums(sums: dict, data_variance: float) -> dict:
    """The metrics of `reconstruction_sums`:

    - `nmse`: MSE on the training scale [-1, 1] divided by the training-set variance;
    - `psnr`: PSNR in dB of the reconstructions clamped to [0, 1], as they are displayed;
    - `perplexity` and `codes_used` of all the code indices, and their `code_counts` (K,).
    """
    counts = sums["code_counts"]
    return {
        "nmse": sums["squared_error"] / sums["values"] / data_variance,
        "psnr": psnr(sums["squared_error_01"] / sums["values"]),
        "perplexity": perplexity_of_counts(counts),
        "codes_used": int((counts > 0).sum()),
        "code_counts": counts,
    }


def evaluate(
    model: nn.Module, images: torch.Tensor, data_variance: float, batch_size: int = 500
) -> dict:
    """Reconstruct every image of a split, (N, 3, H, W) uint8, and measure over the whole split:
    `nmse`, `psnr`, `perplexity`, `codes_used` and `code_counts` (see `metrics_from_sums`)."""
    return metrics_from_sums(reconstruction_sums(model, images, batch_size), data_variance)


def format_metrics(metrics: dict) -> str:
    """One line for the test metrics of `evaluate`."""
    return (
        f"NMSE {metrics['nmse']:.4f} | PSNR {metrics['psnr']:.2f} dB | "
        f"perplexity {metrics['perplexity']:.1f} | codes used {metrics['codes_used']}"
    )
