# Generated from notebooks/09_beyond_the_codebook.ipynb by tools/export.py: edit the notebook.
"""The rotation trick: the gradient crosses the quantiser rotated, not copied.

Chapter 9 (`notebooks/09_beyond_the_codebook.ipynb`) derives it, checks it by hand and against
vector-quantize-pytorch's `rotate_to`.
"""

import torch.nn.functional as F
from torch import Tensor

from vqvae_lite.codebook_upkeep import EMAQuantizerWithUpkeep
from vqvae_lite.quantizer import Quantized, commitment_loss, register_quantizer


def rotation_trick(z_e: Tensor, z_q: Tensor, eps: float = 1e-6) -> Tensor:
    """Forward value z_q; backward, the gradient at z_q rotated and scaled back onto z_e.

    Rows of the last dimension: z_e, z_q (..., D). The output is lambda R z_e plus a constant,
    with lambda = ||z_q|| / ||z_e|| and R the rotation taking z_e's direction onto z_q's, both
    held constant (chapter 9); norms below `eps` count as `eps`.
    """
    z_norm = z_e.norm(dim=-1, keepdim=True).clamp_min(eps).detach()
    e_norm = z_q.norm(dim=-1, keepdim=True).clamp_min(eps).detach()
    z_hat, e_hat = (z_e / z_norm).detach(), (z_q / e_norm).detach()
    r = F.normalize(z_hat + e_hat, dim=-1, eps=eps)  # the Householder vector
    rotated = z_e - 2 * (z_e * r).sum(-1, keepdim=True) * r  # (I - 2 r r^T) z_e
    rotated = rotated + 2 * (z_e * z_hat).sum(-1, keepdim=True) * e_hat  # + 2 e^ z^T z_e
    rotated = e_norm / z_norm * rotated  # lambda R z_e
    return rotated + (z_q - rotated).detach()  # the value of z_q, the gradient of lambda R z_e


@register_quantizer("rotation")
class RotationQuantizer(EMAQuantizerWithUpkeep):
    """Chapter 7's EMA codebook with restarts, whose gradient crosses by the rotation trick.

    Options as `EMAQuantizerWithUpkeep`: `decay`, `restart_dead_after`, `kmeans_init`.
    """

    def forward(self, z_e: Tensor) -> Quantized:
        codes, indices = self.lookup(z_e)  # with the codebook before the update, as chapter 7
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B, D, H, W) -> (B*H*W, D)
        if self.training:
            self.ema_update(flat.detach(), indices.flatten())
        losses = {"commitment": self.beta * commitment_loss(z_e, codes)}
        codes_flat = codes.permute(0, 2, 3, 1).reshape(-1, self.dim).to(z_e.dtype)
        z_q = rotation_trick(flat, codes_flat)  # (B*H*W, D)
        b, _, h, w = z_e.shape
        return Quantized(z_q.view(b, h, w, -1).permute(0, 3, 1, 2), indices, losses)
