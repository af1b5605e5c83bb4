# Generated from notebooks/07_codebook_collapse.ipynb by tools/export.py: edit the notebook.
"""The EMA codebook: a vector quantiser whose codes are moving averages of the encoder outputs
assigned to them.

Chapter 7 (`notebooks/07_codebook_collapse.ipynb`) derives the update and checks it by hand.
"""

import torch
from torch import Tensor

from vqvae_lite.codebook import code_counts
from vqvae_lite.quantizer import Quantized, VectorQuantizer, commitment_loss, straight_through


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
    too, so no gradient moves it. Its only loss term is beta times the commitment term.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
    ):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        super().__init__(num_codes, dim, beta)
        self.decay, self.epsilon = decay, epsilon
        codebook = self.codebook.detach().clone()
        del self.codebook
        self.register_buffer("codebook", codebook)  # (K, D), set from the averages
        self.register_buffer("ema_cluster_size", torch.zeros(num_codes))  # (K,) hidden N
        self.register_buffer("ema_sums", torch.zeros(num_codes, dim))  # (K, D) hidden m
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.int64))  # t

    def forward(self, z_e: Tensor) -> Quantized:
        codes, indices = self.lookup(z_e)  # look up first, with the codebook before the update
        if self.training:
            flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B*H*W, D)
            self.ema_update(flat, indices.flatten())
        losses = {"commitment": self.beta * commitment_loss(z_e, codes)}
        return Quantized(straight_through(z_e, codes.to(z_e.dtype)), indices, losses)

    def batch_statistics(self, flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """This batch's counts n_k (K,) and sums (K, D) of the vectors assigned to each code."""
        counts = code_counts(indices, self.num_codes).float()  # (K,)
        sums = torch.zeros_like(self.ema_sums).index_add_(0, indices, flat.float())  # (K, D)
        return counts, sums

    @torch.no_grad()
    def ema_update(self, flat: Tensor, indices: Tensor) -> None:
        """One EMA step from the batch's vectors (N, D) and their code indices (N,), in float32."""
        with torch.autocast(flat.device.type, enabled=False):
            counts, sums = self.batch_statistics(flat, indices)
            self.ema_steps += 1
            self.ema_cluster_size.lerp_(counts, 1 - self.decay)  # decay N + (1 - decay) n
            self.ema_sums.lerp_(sums, 1 - self.decay)
            correction = 1 - self.decay**self.ema_steps  # bias correction of both averages
            size = self.ema_cluster_size / correction  # (K,)
            total = size.sum()
            size = (size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codebook.copy_(self.ema_sums / correction / size.unsqueeze(1))

    @torch.no_grad()
    def place_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Place the codes of mask `which` (K,) at `vectors` (n, D), averages included.

        Each placed code gets a fair share of the total cluster size, and the matching sum, so
        the next update keeps it where it was put instead of pulling it back to its old place.
        """
        self.codebook[which] = vectors.to(self.codebook.dtype)
        share = self.ema_cluster_size.sum() / self.num_codes  # hidden (uncorrected) scale
        self.ema_cluster_size[which] = share
        self.ema_sums[which] = self.codebook[which] * share
