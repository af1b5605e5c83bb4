# Generated from notebooks/05_decoder.ipynb by tools/export.py: edit the notebook.
"""The decoder: the encoder mirrored with transposed convolutions.

Chapter 5 (`notebooks/05_decoder.ipynb`) walks through the shapes back to an image.
"""

from torch import Tensor, nn

from vqvae_lite.encoder import ResidualStack


class Decoder(nn.Module):
    """(B, D, 8, 8) codes -> (B, 3, 32, 32) images on the training scale (unbounded output)."""

    def __init__(
        self, dim: int, hidden: int, residual_hidden: int, residual_layers: int, out_channels: int
    ):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, hidden, kernel_size=3, stride=1, padding=1)
        self.residual = ResidualStack(hidden, residual_hidden, residual_layers)
        self.up1 = nn.ConvTranspose2d(hidden, hidden // 2, kernel_size=4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(hidden // 2, out_channels, kernel_size=4, stride=2, padding=1)

    def forward(self, z_q: Tensor) -> Tensor:
        x = self.conv1(z_q)  # (B, D, 8, 8) -> (B, h, 8, 8)
        x = self.residual(x)  # (B, h, 8, 8)
        x = self.up1(x).relu()  # (B, h, 8, 8) -> (B, h/2, 16, 16)
        return self.up2(x)  # (B, h/2, 16, 16) -> (B, 3, 32, 32)
