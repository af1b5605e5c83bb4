# Generated from notebooks/04_loss.ipynb by tools/export.py: edit the notebook.
"""The VQ-VAE loss: reconstruction / data variance + codebook term + beta * commitment term.

Chapter 4 (`notebooks/04_loss.ipynb`) checks which parameters each term moves.
"""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(x_hat: Tensor, x: Tensor, data_variance: float) -> Tensor:
    """MSE divided by the pixel variance of the training set, both on the training scale.

    This is the normalised MSE (NMSE): 1.0 means no better than predicting the mean pixel.
    """
    return F.mse_loss(x_hat.float(), x.float()) / data_variance


def codebook_loss(z_e: Tensor, codes: Tensor) -> Tensor:
    """||sg[z_e] - e||^2: pulls the codes towards the encoder outputs; moves only the codebook."""
    return F.mse_loss(codes.float(), z_e.detach().float())


def commitment_loss(z_e: Tensor, codes: Tensor) -> Tensor:
    """||z_e - sg[e]||^2: keeps the encoder close to its codes; moves only the encoder."""
    return F.mse_loss(z_e.float(), codes.detach().float())


@dataclass
class LossTerms:
    """The total loss and its three parts (scalar tensors)."""

    total: Tensor
    reconstruction: Tensor
    codebook: Tensor
    commitment: Tensor


def vqvae_loss(
    x_hat: Tensor,
    x: Tensor,
    z_e: Tensor,
    codes: Tensor,
    data_variance: float,
    beta: float,
    learn_codebook: bool = True,
) -> LossTerms:
    """recon / var + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2, with beta on the commitment term.

    With `learn_codebook=False` (a codebook updated by moving averages) the codebook term is
    left out of the total.
    """
    reconstruction = reconstruction_loss(x_hat, x, data_variance)
    codebook = codebook_loss(z_e, codes)
    commitment = commitment_loss(z_e, codes)
    total = reconstruction + beta * commitment
    if learn_codebook:
        total = total + codebook
    return LossTerms(total, reconstruction, codebook, commitment)
