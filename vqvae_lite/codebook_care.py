"""Keeping the codebook alive: EMA codebook updates, dead-code restarts and k-means initialisation.

Chapter 7 (`notebooks/07_codebook_collapse.ipynb`) measures codebook collapse and each fix.
"""

import torch
from torch import Tensor

from vqvae_lite.codebook import code_counts, nearest_codes
from vqvae_lite.quantizer import Quantized, VectorQuantizer


class EMAVectorQuantizer(VectorQuantizer):
    """A quantiser whose codes are moving averages of the encoder outputs assigned to them.

    After each quantisation in training mode (never in eval mode):
        N_k <- decay N_k + (1 - decay) n_k          (cluster sizes, n_k = count in the batch)
        m_k <- decay m_k + (1 - decay) sum_{i->k} z_i  (cluster sums)
        e_k <- m_hat_k / N_hat_k, with bias correction (divide both by 1 - decay^t) and
               Laplace smoothing of N_hat so that no code divides by zero.
    The averages live in buffers: the optimiser never sees them, and the codebook is not a
    parameter it can move (its gradient term is dropped from the loss).
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5):
        super().__init__(num_codes, dim)
        self.decay, self.epsilon = decay, epsilon
        codebook = self.codebook.detach().clone()
        del self.codebook
        self.register_buffer("codebook", codebook)  # (K, D), set from the averages
        self.register_buffer("ema_cluster_size", torch.zeros(num_codes))  # (K,)
        self.register_buffer("ema_sums", torch.zeros(num_codes, dim))  # (K, D)
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
        self.ema_cluster_size.lerp_(counts, 1 - self.decay)
        self.ema_sums.lerp_(sums, 1 - self.decay)
        correction = 1 - self.decay ** self.ema_steps.item()  # bias correction of both averages
        size = self.ema_cluster_size / correction  # (K,)
        total = size.sum()
        size = (size + self.epsilon) / (total + self.num_codes * self.epsilon) * total  # Laplace
        self.codebook.copy_(self.ema_sums / correction / size.unsqueeze(1))


@torch.no_grad()
def kmeans(z: Tensor, num_codes: int, iterations: int = 10, seed: int = 0) -> Tensor:
    """Lloyd's k-means on z (N, D): returns (num_codes, D) centroids, starting from random rows."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if len(z) < num_codes:
        raise ValueError(f"k-means needs at least {num_codes} vectors, got {len(z)}")
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
def restart_dead_codes(
    quantizer: VectorQuantizer, dead: Tensor, flat: Tensor, generator: torch.Generator
) -> int:
    """Move every dead code (mask (K,)) onto a random encoder output from `flat` (N, D).

    Returns how many codes were restarted. For an EMA quantiser the averages of the restarted
    codes are reset too, so that the next update does not pull them back.
    """
    count = int(dead.sum())
    if count == 0:
        return 0
    picks = torch.randint(len(flat), (count,), generator=generator).to(flat.device)
    quantizer.codebook.data[dead] = flat[picks].to(quantizer.codebook.dtype)
    if isinstance(quantizer, EMAVectorQuantizer):
        size = quantizer.ema_cluster_size[~dead].mean() if (~dead).any() else torch.tensor(1.0)
        quantizer.ema_cluster_size[dead] = size
        quantizer.ema_sums[dead] = quantizer.codebook[dead] * size
    return count
