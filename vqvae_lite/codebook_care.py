# Generated from notebooks/07_codebook_collapse.ipynb by tools/export.py: edit the notebook.
"""Keeping the codebook alive: EMA codebook updates, dead-code restarts and k-means initialisation.

Chapter 7 (`notebooks/07_codebook_collapse.ipynb`) measures codebook collapse and each fix.
"""

import torch
from torch import Tensor

from vqvae_lite.codebook import code_counts, nearest_codes
from vqvae_lite.quantizer import Quantized, VectorQuantizer


class EMAVectorQuantizer(VectorQuantizer):
    """A quantiser whose codes are moving averages of the encoder outputs assigned to them.

    After each quantisation in training mode (never in eval mode), as Sonnet's
    VectorQuantizerEMA does, with hidden averages that start at zero:
        N_k <- decay N_k + (1 - decay) n_k             (cluster sizes, n_k = count in the batch)
        m_k <- decay m_k + (1 - decay) sum_{i->k} z_i  (cluster sums)
        N^_k = N_k / (1 - decay^t),  m^_k = m_k / (1 - decay^t)   (bias correction, t updates)
        N~_k = (N^_k + eps) / (n + K eps) n,  n = sum_k N^_k      (Laplace smoothing)
        e_k = m^_k / N~_k
    The averages live in buffers: the optimiser never sees them, and the codebook is a buffer
    too, so no gradient moves it (the loss drops its codebook term).
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        super().__init__(num_codes, dim)
        self.decay, self.epsilon = decay, epsilon
        codebook = self.codebook.detach().clone()
        del self.codebook
        self.register_buffer("codebook", codebook)  # (K, D), set from the averages
        self.register_buffer("ema_cluster_size", torch.zeros(num_codes))  # (K,) hidden N
        self.register_buffer("ema_sums", torch.zeros(num_codes, dim))  # (K, D) hidden m
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.int64))  # t

    def forward(self, z_e: Tensor) -> Quantized:
        quantized = super().forward(z_e)  # look up first, with the codebook before the update
        if self.training:
            flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B*H*W, D)
            self.ema_update(flat, quantized.indices.flatten())
        return quantized

    @torch.no_grad()
    def ema_update(self, flat: Tensor, indices: Tensor) -> None:
        """One EMA step from the batch's vectors (N, D) and their code indices (N,)."""
        counts = code_counts(indices, self.num_codes).float()  # (K,)
        sums = torch.zeros_like(self.ema_sums).index_add_(0, indices, flat.float())  # (K, D)
        self.ema_steps += 1
        self.ema_cluster_size.lerp_(counts, 1 - self.decay)  # decay N + (1 - decay) n
        self.ema_sums.lerp_(sums, 1 - self.decay)
        correction = 1 - self.decay**self.ema_steps  # bias correction of both averages
        size = self.ema_cluster_size / correction  # (K,)
        total = size.sum()
        size = (size + self.epsilon) / (total + self.num_codes * self.epsilon) * total  # Laplace
        self.codebook.copy_(self.ema_sums / correction / size.unsqueeze(1))

    @torch.no_grad()
    def reset_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Place the codes of mask `which` (K,) at `vectors` (n, D), averages included.

        Each reset code gets a fair share of the total cluster size, and the matching sum, so
        the next update keeps it where it was put instead of pulling it back to its old place.
        """
        self.codebook[which] = vectors.to(self.codebook.dtype)
        share = self.ema_cluster_size.sum() / self.num_codes  # hidden (uncorrected) scale
        self.ema_cluster_size[which] = share
        self.ema_sums[which] = self.codebook[which] * share


@torch.no_grad()
def restart_dead_codes(
    quantizer: VectorQuantizer, dead: Tensor, flat: Tensor, generator: torch.Generator
) -> int:
    """Move every dead code (mask (K,)) onto a distinct random encoder output from `flat` (N, D).

    Returns how many codes were restarted. For an EMA quantiser the averages of the restarted
    codes are reset too, so that the next update does not pull them back.
    """
    count = int(dead.sum())
    if count == 0:
        return 0
    if count <= len(flat):  # distinct rows, so that no two restarted codes coincide
        picks = torch.randperm(len(flat), generator=generator)[:count]
    else:
        picks = torch.randint(len(flat), (count,), generator=generator)
    vectors = flat[picks.to(flat.device)].detach()  # (count, D)
    if isinstance(quantizer, EMAVectorQuantizer):
        quantizer.reset_codes(dead, vectors)
    else:
        quantizer.codebook[dead] = vectors.to(quantizer.codebook.dtype)
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


@torch.no_grad()
def init_codebook(
    quantizer: VectorQuantizer, z: Tensor, iterations: int = 10, seed: int = 0
) -> None:
    """Set the codebook to the k-means centroids of encoder outputs z (N, D), before training.

    For an EMA quantiser the k-means clusters also become the first observation of its
    averages; otherwise the first training update would send every code that the first batch
    does not pick back to zero.
    """
    centroids = kmeans(z, quantizer.num_codes, iterations, seed)
    quantizer.codebook.copy_(centroids)
    if isinstance(quantizer, EMAVectorQuantizer):  # the clusters are the first observation
        counts = code_counts(nearest_codes(z, centroids), quantizer.num_codes).float()  # (K,)
        quantizer.ema_steps.fill_(1)
        quantizer.ema_cluster_size.copy_(counts * (1 - quantizer.decay))
        quantizer.ema_sums.copy_(centroids * quantizer.ema_cluster_size.unsqueeze(1))
        empty = counts == 0  # a cluster k-means left empty keeps its centroid too
        quantizer.reset_codes(empty, centroids[empty])


# The variants chapter 7 compares: fields of ModelConfig, then the fields of TrainConfig that
# differ from the preset they are applied to. Restarts keep the preset's `restart_dead_after`.
VARIANTS = {
    "plain VQ": ({"codebook_update": "gradient"}, {"restart_dead_after": 0, "kmeans_init": False}),
    "EMA": ({"codebook_update": "ema"}, {"restart_dead_after": 0, "kmeans_init": False}),
    "EMA + restart": ({"codebook_update": "ema"}, {"kmeans_init": False}),
    "k-means + restart": ({"codebook_update": "gradient"}, {"kmeans_init": True}),
    "EMA + k-means + restart": ({"codebook_update": "ema"}, {"kmeans_init": True}),
}
