# Generated from notebooks/07_codebook_collapse.ipynb by tools/export.py: edit the notebook.
"""Codebook upkeep: dead-code restarts and k-means initialisation, offered through the
quantiser interface, and the quantisers of this chapter in the registry.

Chapter 7 (`notebooks/07_codebook_collapse.ipynb`) measures codebook collapse and each fix.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from vqvae_lite.codebook import code_counts, nearest_codes
from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.model import ModelConfig
from vqvae_lite.quantizer import VectorQuantizer, register_quantizer


@torch.no_grad()
def restart_dead_codes(quantizer, dead: Tensor, flat: Tensor, generator: torch.Generator) -> int:
    """Move every dead code (mask (K,)) onto a distinct random encoder output from `flat` (N, D).

    The quantiser's `place_codes` puts them there (an EMA codebook resets its averages too).
    Returns how many codes were restarted.
    """
    count = int(dead.sum())
    if count == 0:
        return 0
    if count <= len(flat):  # distinct rows, so that no two restarted codes coincide
        picks = torch.randperm(len(flat), generator=generator)[:count]
    else:
        picks = torch.randint(len(flat), (count,), generator=generator)
    quantizer.place_codes(dead, flat[picks.to(flat.device)].detach())  # (count, D)
    return count


@torch.no_grad()
def kmeans(z: Tensor, num_codes: int, iterations: int = 10, seed: int = 0) -> Tensor:
    """Lloyd's k-means on z (N, D): returns (num_codes, D) centroids, starting from random rows."""
    if len(z) < num_codes:
        raise ValueError(f"k-means needs at least {num_codes} vectors, got {len(z)}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = torch.randperm(len(z), generator=generator)[:num_codes].to(z.device)
    centroids = z[start].float().clone()  # (K, D)
    for _ in range(iterations):
        indices = nearest_codes(z, centroids)  # (N,)
        counts = code_counts(indices, num_codes).float()  # (K,)
        sums = torch.zeros_like(centroids).index_add_(0, indices, z.float())  # (K, D)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)  # empty keep their place
    return centroids


class CodebookUpkeep:
    """Dead-code restarts and k-means initialisation for a codebook quantiser (a mixin).

    Options: `restart_dead_after` (steps unused before a code moves onto an encoder output of
    the current batch; 0: never) and `kmeans_init` (start at k-means centroids). The counters
    and the random state of the restarts are buffers, saved with the weights, so that a resumed
    run restarts the same codes.
    """

    def __init__(self, *args, restart_dead_after: int = 0, kmeans_init: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if restart_dead_after < 0:
            raise ValueError(f"restart_dead_after must be >= 0, got {restart_dead_after}")
        self.restart_dead_after, self.kmeans_init = restart_dead_after, kmeans_init
        self.register_buffer("unused_for", torch.zeros(self.num_codes, dtype=torch.int64))
        seed = int(torch.randint(2**62, ()))  # drawn from the seeded global generator
        restarts = torch.Generator().manual_seed(seed)
        self.register_buffer("restart_rng", restarts.get_state())  # saved with the weights

    def initialize(self, sample: Callable[[], Tensor]) -> None:
        if self.kmeans_init:
            z = sample()  # (N, D) encoder outputs
            self.start_at(kmeans(z, self.num_codes, seed=int(torch.randint(2**31, ()))), z)

    def start_at(self, centroids: Tensor, z: Tensor) -> None:
        """Set the codebook to `centroids` (K, D) found from the encoder outputs z (N, D)."""
        self.codebook.data.copy_(centroids)

    def upkeep(self, z_e: Tensor, indices: Tensor) -> int:
        """Count the steps since each code was used; restart those unused for too long."""
        used = code_counts(indices, self.num_codes) > 0  # (K,)
        self.unused_for.copy_(torch.where(used, 0, self.unused_for + 1))
        if not self.restart_dead_after:
            return 0
        dead = self.unused_for >= self.restart_dead_after  # (K,)
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B*h*w, D)
        self.unused_for[dead] = 0
        restarts = torch.Generator()
        restarts.set_state(self.restart_rng.cpu())
        count = restart_dead_codes(self, dead, flat, restarts)
        self.restart_rng.copy_(restarts.get_state())
        return count


@register_quantizer("vq-upkeep")
class VectorQuantizerWithUpkeep(CodebookUpkeep, VectorQuantizer):
    """Chapter 3's gradient-trained codebook, with restarts and k-means initialisation."""


@register_quantizer("ema")
class EMAQuantizerWithUpkeep(CodebookUpkeep, EMAVectorQuantizer):
    """The EMA codebook, with restarts and k-means initialisation."""

    @torch.no_grad()
    def start_at(self, centroids: Tensor, z: Tensor) -> None:
        """The k-means clusters also become the first observation of the averages; otherwise
        the first update would send every code that the first batch misses back to zero."""
        self.codebook.copy_(centroids)
        counts = code_counts(nearest_codes(z, centroids), self.num_codes).float()  # (K,)
        self.ema_steps.fill_(1)
        self.ema_cluster_size.copy_(counts * (1 - self.decay))
        self.ema_sums.copy_(centroids * self.ema_cluster_size.unsqueeze(1))
        empty = counts == 0  # a cluster k-means left empty keeps its centroid too
        self.place_codes(empty, centroids[empty])


# The variants this chapter compares, as model configurations of chapter 5; each restarting
# variant restarts codes unused for `restart_dead_after` steps.
def variants(restart_dead_after: int = 20) -> dict[str, ModelConfig]:
    """Plain VQ, EMA, and the restart and k-means fixes, named as in the chapter."""
    restart = {"restart_dead_after": restart_dead_after}
    kmeans_restart = restart | {"kmeans_init": True}
    return {
        "plain VQ": ModelConfig(quantizer="vq"),
        "EMA": ModelConfig(quantizer="ema"),
        "EMA + restart": ModelConfig(quantizer="ema", quantizer_options=restart),
        "k-means + restart": ModelConfig(quantizer="vq-upkeep", quantizer_options=kmeans_restart),
        "EMA + k-means + restart": ModelConfig(quantizer="ema", quantizer_options=kmeans_restart),
    }


# The model the command line trains by default: the best variant of this chapter, with the
# restart threshold each preset measured best (a shorter run restarts sooner).
DEFAULT_MODELS = {
    "cpu": variants(restart_dead_after=20)["EMA + restart"],
    "gpu": variants(restart_dead_after=50)["EMA + restart"],
}
