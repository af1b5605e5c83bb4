# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""Likelihoods in bits: the decoder read as a discretised Gaussian (the reconstruction term of
the evidence bound, in bits per dimension), a prior's bits per code, and the two priors that
need no training, uniform and unigram.

Chapter 8 (`notebooks/08_prior.ipynb`) derives the bound and measures every prior with it.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae_lite.code_dataset import check_codes, check_labels
from vqvae_lite.metrics import evaluation_mode
from vqvae_lite.model import VQVAE
from vqvae_lite.training_scale import to_training_scale


def discretized_gaussian_nats(x_hat: Tensor, images: Tensor, sigma: float) -> Tensor:
    """-log p(x | z) in nats per image (B,) for uint8 images (B, 3, H, W): a Gaussian of mean
    x_hat (training scale) and std `sigma`, integrated over each pixel's 8-bit bin; the bins
    of 0 and 255 reach to -inf and +inf."""
    x = images.double() / 127.5 - 1.0  # the bin centres on the training scale
    half = 1.0 / 255.0  # half a bin: 256 bins across [-1, 1]
    normal = torch.distributions.Normal(x_hat.double(), sigma)
    upper = torch.where(images == 255, torch.inf, x + half)
    lower = torch.where(images == 0, -torch.inf, x - half)
    p = normal.cdf(upper) - normal.cdf(lower)
    return -p.clamp_min(1e-300).log().flatten(1).sum(1)


@torch.no_grad()
def reconstructions(model: VQVAE, images: Tensor, batch_size: int = 500):
    """Yield (uint8 images, reconstructions on the training scale) batch by batch, with the
    model in eval mode until the last batch."""
    device = next(model.parameters()).device
    with evaluation_mode(model):
        for batch in images.split(batch_size):
            x = to_training_scale(batch.to(device))  # (b, 3, H, W) in [-1, 1]
            x = x.contiguous(memory_format=torch.channels_last)
            yield batch, model(x).x_hat.float().cpu()


def fit_sigma(model: VQVAE, images: Tensor) -> float:
    """The decoder's noise level: the root mean squared reconstruction error, the maximum
    likelihood std of a Gaussian around the reconstruction (fit it on the training split)."""
    squared, count = 0.0, 0
    for batch, x_hat in reconstructions(model, images):
        squared += (x_hat.double() - to_training_scale(batch).double()).square().sum().item()
        count += batch.numel()
    return math.sqrt(squared / count)


def reconstruction_bits(model: VQVAE, images: Tensor, sigma: float) -> float:
    """The mean -log2 p(x | z) of the discretised Gaussian decoder, in bits per image."""
    nats = sum(
        discretized_gaussian_nats(x_hat, batch, sigma).sum().item()
        for batch, x_hat in reconstructions(model, images)
    )
    return bits(nats / len(images))


def bits_per_dim(reconstruction_bits: float, code_bits: float, dims: int = 3 * 32 * 32) -> float:
    """The evidence bound in bits per dimension: (-log2 p(x|z) - log2 p(z)) / dims."""
    return (reconstruction_bits + code_bits) / dims


def bits(nats: Tensor | float) -> Tensor | float:
    """Nats -> bits: divide by ln 2."""
    return nats / math.log(2)


class UnigramPrior(nn.Module):
    """Every position draws its code from the same frequencies: logits log(counts + 1).

    With `counts` all equal the logits are all zero: the uniform prior of VQ-VAE training.
    """

    def __init__(self, counts: Tensor, num_classes: int = 10):
        super().__init__()
        self.num_codes, self.num_classes = len(counts), num_classes
        logits = (counts.double() + 1).log()  # add-one smoothing: no code gets probability 0
        self.register_buffer("logits", (logits - logits.max()).float())  # (K,)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W) of every position's code."""
        check_codes(codes, self.num_codes)
        check_labels(labels, self.num_classes, len(codes))
        b, h, w = codes.shape
        return self.logits.view(1, -1, 1, 1).expand(b, -1, h, w)


@torch.no_grad()
def position_bits(prior: nn.Module, codes: Tensor, labels: Tensor, batch_size: int = 500) -> Tensor:
    """The mean negative log-likelihood, in bits, of the code at each position: (H, W)."""
    device = next(iter(prior.state_dict().values())).device
    total = torch.zeros(codes.shape[1:], dtype=torch.float64)
    with evaluation_mode(prior):
        for c, y in zip(codes.split(batch_size), labels.split(batch_size), strict=True):
            c, y = c.to(device), y.to(device)
            nll = F.cross_entropy(prior(c, y).float(), c, reduction="none")  # (b, H, W) nats
            total += nll.sum(0).double().cpu()
    return bits(total / len(codes))


def bits_per_code(prior: nn.Module, codes: Tensor, labels: Tensor) -> float:
    """The mean negative log-likelihood of the codes, in bits per code."""
    return position_bits(prior, codes, labels).mean().item()
