# Generated from notebooks/01_encoder.ipynb by tools/export.py: edit the notebook.
"""The encoder: two strided convolutions, one 3x3 convolution and a residual stack.

Chapter 1 (`notebooks/01_encoder.ipynb`) walks through every layer and its shapes.
"""

from torch import Tensor, nn


class ResidualLayer(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))). The skip path carries x itself."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),  # NOT inplace: an in-place ReLU here would overwrite the skip input
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)  # (B, C, H, W) -> (B, C, H, W)


class ResidualStack(nn.Module):
    """`layers` distinct residual layers (no shared weights), then a ReLU."""

    def __init__(self, channels: int, hidden: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList([ResidualLayer(channels, hidden) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x.relu()


class Encoder(nn.Module):
    """(B, 3, 32, 32) images -> (B, hidden, 8, 8) features: each stride-2 conv halves H and W."""

    def __init__(self, in_channels: int, hidden: int, residual_hidden: int, residual_layers: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden // 2, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden // 2, hidden, kernel_size=4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(hidden, hidden, kernel_size=3, stride=1, padding=1)
        self.residual = ResidualStack(hidden, residual_hidden, residual_layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).relu()  # (B, 3, 32, 32) -> (B, h/2, 16, 16)
        x = self.conv2(x).relu()  # (B, h/2, 16, 16) -> (B, h, 8, 8)
        x = self.conv3(x)  # (B, h, 8, 8) -> (B, h, 8, 8)
        return self.residual(x)  # (B, h, 8, 8)
