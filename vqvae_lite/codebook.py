# Generated from notebooks/02_codebook_lookup.ipynb by tools/export.py: edit the notebook.
"""Nearest-code lookup: squared distances, argmin, gather, and the usage statistics.

Chapter 2 (`notebooks/02_codebook_lookup.ipynb`) derives the distance formula and checks it.
"""

import torch
from torch import Tensor


def squared_distances(z: Tensor, codebook: Tensor) -> Tensor:
    """||z_i - e_k||^2 for every row of z (N, D) and code e (K, D), as ||z||^2 + ||e||^2 - 2 z.e.

    Computed in float32 whatever the input dtype, and with autocast switched off: autocast
    runs `addmm` in bf16 even on float32 inputs, and under bf16 the argmin picks wrong codes.
    Returns (N, K) float32.
    """
    with torch.autocast(z.device.type, enabled=False):
        z, codebook = z.float(), codebook.float()
        z_sq = z.square().sum(dim=1, keepdim=True)  # (N, 1)
        e_sq = codebook.square().sum(dim=1)  # (K,)
        return torch.addmm(z_sq + e_sq, z, codebook.t(), alpha=-2.0)  # (N,1)+(K,)-2(N,K)


def nearest_codes(z: Tensor, codebook: Tensor, chunk_size: int = 8192) -> Tensor:
    """Index of the nearest code for each row of z (N, D) -> (N,) int64.

    Rows are processed `chunk_size` at a time, so memory stays bounded by chunk_size x K
    however large N is. No one-hot matrix is ever built.
    """
    with torch.no_grad():
        chunks = [squared_distances(part, codebook).argmin(dim=1) for part in z.split(chunk_size)]
    return torch.cat(chunks)


def lookup(indices: Tensor, codebook: Tensor) -> Tensor:
    """Gather the code vectors by indexing: (N,) indices, (K, D) codebook -> (N, D)."""
    return codebook[indices]


def code_counts(indices: Tensor, num_codes: int) -> Tensor:
    """How many times each of the K codes was picked -> (K,) int64."""
    return torch.bincount(indices.flatten(), minlength=num_codes)


def perplexity_of_counts(counts: Tensor) -> float:
    """exp(entropy of code usage) from the counts (K,) of each code: the number of equally
    used codes with the same entropy.

    1 when one code takes everything; K when every code is used equally often.
    """
    probs = counts.double() / counts.sum()  # (K,) share of each code
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
    return entropy.exp().item()


def perplexity(indices: Tensor, num_codes: int) -> float:
    """The perplexity of the codes picked: `perplexity_of_counts` of their counts."""
    return perplexity_of_counts(code_counts(indices, num_codes))


def codes_used(indices: Tensor, num_codes: int) -> int:
    """How many distinct codes appear at least once."""
    return int((code_counts(indices, num_codes) > 0).sum())
