# Generated from notebooks/09_beyond_the_codebook.ipynb by tools/export.py: edit the notebook.
"""Residual vector quantisation: each stage quantises what the stages before it left over.

Chapter 9 (`notebooks/09_beyond_the_codebook.ipynb`) builds it and checks it against
vector-quantize-pytorch's `ResidualVQ`.
"""

import torch
from torch import Tensor, nn

from vqvae_lite.codebook_upkeep import EMAQuantizerWithUpkeep
from vqvae_lite.quantizer import (
    Quantized,
    Quantizer,
    check_indices,
    check_latents,
    commitment_loss,
    register_quantizer,
    straight_through,
)

MOST_INDICES = 2**20  # every index is counted at every step: a (num_codes,) tensor of counts


class ResidualCodebooks(Quantizer):
    """The codebooks of residual VQ and its indices; `ResidualVQ` quantises with them.

    `stages` EMA codebooks with restarts (chapter 7) of K = ModelConfig.num_codes codes each
    (one codebook for all the stages with `shared_codebook=True`). The index of a position is
    the mixed-radix number of its stage indices (stage 0 the lowest digit), in [0, K**stages),
    so `num_codes` (the size of the index space) is K**stages, at most `MOST_INDICES`.
    """

    takes_beta = True

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        stages: int = 2,
        shared_codebook: bool = False,
        decay: float = 0.99,
        restart_dead_after: int = 0,
    ):
        super().__init__()
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f"residual VQ needs an integer number of stages >= 1, got {stages}")
        if num_codes**stages > MOST_INDICES:
            raise ValueError(
                f"residual VQ numbers each position by one index in [0, K**stages), and counts "
                f"every index at every step: {stages} stages of {num_codes} codes make "
                f"{num_codes**stages:.3g} indices, more than {MOST_INDICES:,}. Use fewer "
                "stages or codes (2 stages of 1024 fit)"
            )
        self.num_codes, self.dim, self.beta = num_codes**stages, dim, beta
        self.stages, self.size, self.shared_codebook = stages, num_codes, shared_codebook
        self.codebooks = nn.ModuleList(
            EMAQuantizerWithUpkeep(
                num_codes, dim, beta, decay, restart_dead_after=restart_dead_after
            )
            for _ in range(1 if shared_codebook else stages)
        )

    def codebook_of(self, stage: int) -> EMAQuantizerWithUpkeep:
        return self.codebooks[0 if self.shared_codebook else stage]

    def combine(self, stage_indices: Tensor) -> Tensor:
        """(stages, B, H, W) stage indices -> (B, H, W) indices in [0, K**stages)."""
        weights = self.size ** torch.arange(self.stages, device=stage_indices.device)
        return (stage_indices * weights.view(-1, 1, 1, 1)).sum(dim=0)

    def split(self, indices: Tensor) -> Tensor:
        """(B, H, W) indices -> (stages, B, H, W) stage indices, the inverse of `combine`."""
        weights = self.size ** torch.arange(self.stages, device=indices.device)
        return indices.unsqueeze(0) // weights.view(-1, 1, 1, 1) % self.size

    def stage_counts(self, code_counts: Tensor) -> Tensor:
        """(K**stages,) counts of the combined indices -> (stages, K) counts of each stage."""
        grid = code_counts.view([self.size] * self.stages)  # dim -1 - s is stage s's digit
        dims = range(self.stages)
        return torch.stack(
            [grid.sum(dim=[d for d in dims if d != self.stages - 1 - s]) for s in dims]
        )

    def decode(self, indices: Tensor) -> Tensor:
        """(B, H, W) indices -> (B, D, H, W): the sum of every stage's code."""
        check_indices(indices, self.num_codes)
        stage_indices = self.split(indices)
        return sum(self.codebook_of(s).decode(stage_indices[s]) for s in range(self.stages))


@register_quantizer("rvq")
class ResidualVQ(ResidualCodebooks):
    """Residual VQ (Zeghidour et al., 2021): stage s quantises z_e - (codes of stages < s).

    z_q is the sum of the stages' codes, crossed by straight-through. Loss: beta times the
    commitment terms of the stages, summed. Options: `stages`, `shared_codebook` (a shared
    codebook is updated once per step, from all the stages' residuals), and chapter 7's
    `decay` and `restart_dead_after` for every codebook.
    """

    def forward(self, z_e: Tensor) -> Quantized:
        check_latents(z_e, self.dim)
        residual, total, stage_indices, commitment = z_e, 0, [], 0
        observed = []  # (codebook, residual rows, indices) of every stage, for the EMA
        for stage in range(self.stages):
            codebook = self.codebook_of(stage)
            codes, indices = codebook.lookup(residual)  # (B, D, H, W) float32, (B, H, W)
            commitment = commitment + commitment_loss(residual, codes)
            flat = residual.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (BHW, D)
            observed.append((codebook, flat, indices.flatten()))
            total = total + codes
            residual = residual - codes.to(residual.dtype)
            stage_indices.append(indices)
        if self.training:
            self.ema_update(observed)
        losses = {"commitment": self.beta * commitment}
        z_q = straight_through(z_e, total.to(z_e.dtype))
        return Quantized(z_q, self.combine(torch.stack(stage_indices)), losses)

    def ema_update(self, observed: list) -> None:
        """Each codebook learns from the stages that used it, in one EMA step."""
        for codebook in self.codebooks:
            rows = [(flat, idx) for book, flat, idx in observed if book is codebook]
            flats, indices = zip(*rows, strict=True)
            codebook.ema_update(torch.cat(flats), torch.cat(indices))

    @torch.no_grad()
    def upkeep(self, z_e: Tensor, indices: Tensor) -> int:
        """Each codebook's restarts (chapter 7), from the residuals that its stages quantised.

        The residuals are recomputed from the step's indices with the codes as they are now.
        """
        stage_indices, residual, residuals = self.split(indices), z_e, []
        for stage in range(self.stages):
            residuals.append(residual)
            residual = residual - self.codebook_of(stage).decode(stage_indices[stage])
        moved = 0
        for i, codebook in enumerate(self.codebooks):
            mine = range(self.stages) if self.shared_codebook else [i]
            moved += codebook.upkeep(
                torch.cat([residuals[s] for s in mine]),  # (n B, D, H, W)
                torch.cat([stage_indices[s] for s in mine]),  # (n B, H, W)
            )
        return moved
