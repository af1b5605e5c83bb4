# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""PixelCNN priors over the codes: masked convolutions, the gated PixelCNN of van den Oord et
al. (2016b), registered as "pixelcnn", and the original stack of plain masked convolutions,
registered as "masked-pixelcnn", with its blind spot.

Chapter 8 (`notebooks/08_prior.ipynb`) builds the masks, finds the blind spot by autograd and
trains the gated PixelCNN.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae_lite.code_dataset import check_codes, check_labels
from vqvae_lite.prior_registry import check_sizes, register_prior


def causal_mask(kind: str, size: int, first: bool) -> Tensor:
    """The 0/1 kernel of a masked convolution; `first` (mask A) also hides the centre tap.

    "plain": size x size, the rows above the centre and the centre row left of it (the
    PixelCNN's mask); "vertical": size x size, the rows above the centre, plus the whole centre
    row unless first; "horizontal": 1 x size, the taps left of the centre, plus the centre
    unless first.
    """
    c = size // 2
    if kind == "horizontal":
        mask = torch.zeros(1, size)
        mask[0, :c], mask[0, c] = 1, float(not first)
        return mask
    mask = torch.zeros(size, size)
    mask[:c] = 1
    if kind == "vertical":
        mask[c] = float(not first)
    elif kind == "plain":
        mask[c, :c], mask[c, c] = 1, float(not first)
    else:
        raise ValueError(f"mask kind must be 'plain', 'vertical' or 'horizontal', got {kind!r}")
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution whose kernel is multiplied by a fixed 0/1 mask at every use."""

    def __init__(self, in_channels: int, out_channels: int, mask: Tensor):
        kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask[None, None])  # (kh, kw) -> (1, 1, kh, kw)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def gate(x: Tensor) -> Tensor:
    """The gated activation tanh(a) * sigmoid(b) of the two halves of the channels."""
    a, b = x.chunk(2, dim=1)  # (B, 2C, H, W) -> 2 x (B, C, H, W)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """One layer of the gated PixelCNN: a vertical stack (the rows above), a horizontal stack
    (the codes to the left in this row) fed by the vertical one, gates with a class bias."""

    def __init__(self, dim: int, size: int, num_classes: int, first: bool):
        super().__init__()
        self.vertical = MaskedConv2d(dim, 2 * dim, causal_mask("vertical", size, first))
        self.horizontal = MaskedConv2d(dim, 2 * dim, causal_mask("horizontal", size, first))
        self.vertical_to_horizontal = nn.Conv2d(2 * dim, 2 * dim, kernel_size=1)
        self.horizontal_out = nn.Conv2d(dim, dim, kernel_size=1)
        self.label_bias = nn.Embedding(num_classes, 2 * dim)
        self.residual = not first

    def forward(self, v: Tensor, h: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        bias = self.label_bias(labels)[:, :, None, None]  # (B,) -> (B, 2C, 1, 1)
        v_pre = self.vertical(v)  # (B, 2C, H, W), sees only the rows above
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(v_pre)
        out = self.horizontal_out(gate(h_pre + bias))  # (B, C, H, W)
        return gate(v_pre + bias), h + out if self.residual else out


def output_head(dim: int, num_codes: int) -> nn.Sequential:
    """Per-position features (B, C, H, W) -> logits (B, K, H, W)."""
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(dim, 4 * dim, 1), nn.ReLU(), nn.Conv2d(4 * dim, num_codes, 1)
    )


class PixelCNN(nn.Module):
    """What both PixelCNNs share: their sizes, checked, and the embedding of the K codes into
    `dim` channels. Convolutions take any grid of codes; with `grid`, only that one is
    accepted."""

    def __init__(
        self,
        num_codes: int,
        num_classes: int,
        dim: int = 64,
        layers: int = 6,
        grid: tuple[int, int] | None = None,
    ):
        super().__init__()
        check_sizes(type(self).__name__, dim=dim, layers=layers)
        self.num_codes, self.num_classes = num_codes, num_classes
        self.dim, self.layers = dim, layers
        self.grid = None if grid is None else tuple(grid)
        self.embedding = nn.Embedding(num_codes, dim)

    def embed(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W) and labels (B,), checked -> embedded codes (B, C, H, W)."""
        check_codes(codes, self.num_codes, self.grid)
        check_labels(labels, self.num_classes, len(codes))
        return self.embedding(codes).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


@register_prior("pixelcnn")
class GatedPixelCNN(PixelCNN):
    """The gated PixelCNN of van den Oord et al. (2016b) over a grid of codes, conditioned on
    the class: a first 7x7 layer with mask A, then 3x3 layers with mask B."""

    def __init__(self, num_codes: int, num_classes: int, **sizes):
        super().__init__(num_codes, num_classes, **sizes)
        dim, layers = self.dim, self.layers
        self.blocks = nn.ModuleList(
            GatedBlock(dim, 7 if i == 0 else 3, num_classes, first=i == 0) for i in range(layers)
        )
        self.head = output_head(dim, num_codes)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W); position p sees codes < p."""
        x = self.embed(codes, labels)  # (B, C, H, W)
        v, h = x, x
        for block in self.blocks:
            v, h = block(v, h, labels)
        return self.head(h)


@register_prior("masked-pixelcnn")
class MaskedPixelCNN(PixelCNN):
    """The original PixelCNN's stack of plain masked convolutions, the same depth as the gated
    one: it has a blind spot above and to the right of every position."""

    def __init__(self, num_codes: int, num_classes: int, **sizes):
        super().__init__(num_codes, num_classes, **sizes)
        dim, layers = self.dim, self.layers
        self.label_bias = nn.Embedding(num_classes, dim)
        self.convs = nn.ModuleList(
            MaskedConv2d(dim, dim, causal_mask("plain", 7 if i == 0 else 3, first=i == 0))
            for i in range(layers)
        )
        self.head = output_head(dim, num_codes)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W), blind spot included."""
        x = self.embed(codes, labels)  # (B, C, H, W)
        bias = self.label_bias(labels)[:, :, None, None]  # (B, C, 1, 1)
        for i, conv in enumerate(self.convs):
            y = torch.relu(conv(x) + bias)
            x = y if i == 0 else x + y
        return self.head(x)
