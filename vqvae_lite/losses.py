# Generated from notebooks/04_loss.ipynb by tools/export.py: edit the notebook.
"""The VQ-VAE loss: reconstruction / data variance + the quantiser's own terms.

Chapter 4 (`notebooks/04_loss.ipynb`) checks which parameters each term moves.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(x_hat: Tensor, x: Tensor, data_variance: float) -> Tensor:
    """MSE divided by the pixel variance of the training set, both on the training scale.

    This is the normalised MSE (NMSE): 1.0 means no better than predicting the mean pixel.
    Computed in float32, with autocast switched off.
    """
    with torch.autocast(x.device.type, enabled=False):
        return F.mse_loss(x_hat.float(), x.float()) / data_variance


@dataclass
class LossTerms:
    """The total loss and its parts (scalar tensors)."""

    total: Tensor
    reconstruction: Tensor
    quantizer: dict[str, Tensor]  # the quantiser's own weighted terms, by name


def vqvae_loss(
    x_hat: Tensor, x: Tensor, quantizer_losses: dict[str, Tensor], data_variance: float
) -> LossTerms:
    """reconstruction / variance + the quantiser's terms (for the vector quantiser of chapter 3:
    ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2)."""
    reconstruction = reconstruction_loss(x_hat, x, data_variance)
    total = reconstruction + sum(quantizer_losses.values())
    return LossTerms(total, reconstruction, dict(quantizer_losses))
