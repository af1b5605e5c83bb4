# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""Priors over the codes of a trained VQ-VAE: code data sets, the uniform and unigram priors, a
gated PixelCNN and a small causal transformer, bits per code, ancestral sampling, and the
command `python -m vqvae_lite.prior` that trains one and writes sampled images.

Chapter 8 (`notebooks/08_prior.ipynb`) builds each part and measures the priors on CIFAR-10.
"""

import argparse
import hashlib
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from vqvae_lite.checkpoint import CheckpointError, checksum
from vqvae_lite.data import ResidentBatches, load_cifar10, to_training_scale
from vqvae_lite.loop import (
    CHECKPOINT,
    NonFiniteLossError,
    StepOutput,
    Task,
    TrainConfig,
    fit,
    hardware,
    resolve_device,
)
from vqvae_lite.model import VQVAE
from vqvae_lite.train import load_model
from vqvae_lite.viz import image_grid


def check_codes(codes: Tensor, num_codes: int, grid: tuple[int, int] | None = None) -> None:
    """Raise a ValueError naming what is expected unless `codes` are integer indices of shape
    (B, H, W) (H, W = `grid` when given) in [0, num_codes)."""
    shape = "(B, H, W)" if grid is None else f"(B, {grid[0]}, {grid[1]})"
    expected = f"expected integer code indices of shape {shape} in [0, {num_codes})"
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"{expected}, got dtype {codes.dtype}")
    if codes.dim() != 3 or (grid is not None and tuple(codes.shape[1:]) != tuple(grid)):
        raise ValueError(f"{expected}, got shape {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
        low, high = int(codes.min()), int(codes.max())
        raise ValueError(f"{expected}, got values from {low} to {high}")


def check_labels(labels: Tensor, num_classes: int, batch: int) -> None:
    """Raise a ValueError unless `labels` are `batch` integer class labels in [0, num_classes)."""
    expected = f"expected {batch} integer class labels of shape ({batch},) in [0, {num_classes})"
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{expected}, got dtype {labels.dtype}")
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"{expected}, got shape {tuple(labels.shape)}")
    if batch and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{expected}, got an unknown class {int(labels.max())}")


@torch.no_grad()
def encode_codes(model: VQVAE, images: Tensor, batch_size: int = 500) -> Tensor:
    """uint8 images (N, 3, H, W) -> their code indices (N, H/4, W/4) int64, on the CPU."""
    was_training = model.training
    model.eval()  # an EMA codebook must not learn from what it encodes
    device = next(model.parameters()).device
    codes = []
    for batch in images.split(batch_size):
        x = to_training_scale(batch.to(device)).contiguous(memory_format=torch.channels_last)
        codes.append(model.quantizer(model.encode(x)).indices.cpu())  # (b, h, w)
    model.train(was_training)
    return torch.cat(codes)


@torch.no_grad()
def decode_codes(model: VQVAE, codes: Tensor) -> Tensor:
    """Code indices (B, h, w) -> uint8 images (B, 3, 4h, 4w) in [0, 255]."""
    check_codes(codes, model.config.num_codes)
    device = next(model.parameters()).device
    x_hat = model.decode_indices(codes.long().to(device)).float()  # (B, 3, 4h, 4w) in [-1, 1]
    return ((x_hat + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


@dataclass
class CodeSplits:
    """A data set of codes: the VQ-VAE's indices of every image, with the image's class."""

    train: Tensor  # (N_train, H, W) int64
    test: Tensor  # (N_test, H, W) int64
    train_labels: Tensor  # (N_train,) int64
    test_labels: Tensor  # (N_test,) int64
    num_codes: int

    def fingerprint(self) -> str:
        """A short hash of the training codes: a resumed prior must see the same codes."""
        return hashlib.sha256(self.train.numpy().tobytes()).hexdigest()[:16]


def encode_splits(model: VQVAE, splits) -> CodeSplits:
    """Encode both splits of an `ImageSplits` with a trained VQ-VAE."""
    return CodeSplits(
        encode_codes(model, splits.train),
        encode_codes(model, splits.test),
        splits.train_labels.long(),
        splits.test_labels.long(),
        model.config.num_codes,
    )


def cached_codes(model: VQVAE, splits, path: str | Path) -> CodeSplits:
    """`encode_splits`, kept in the file `path`: a file written for the same weights and the
    same images is read instead of encoding again; any other (or a damaged one) is replaced."""
    path = Path(path)
    key = checksum({"weights": model.state_dict(), "train": splits.train, "test": splits.test})
    try:
        saved = torch.load(path, weights_only=True)
        if saved["key"] == key:
            return CodeSplits(**saved["codes"])
    except Exception:  # no file, or not one this function wrote whole: encode again
        pass
    codes = encode_splits(model, splits)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"key": key, "codes": vars(codes)}, partial)
    partial.replace(path)  # atomic: a killed write never leaves half a file at `path`
    return codes


def discretized_gaussian_nats(x_hat: Tensor, images: Tensor, sigma: float) -> Tensor:
    """-log p(x | z) in nats per image (B,) for uint8 images (B, 3, H, W): a Gaussian of mean
    x_hat (training scale) and std `sigma`, integrated over each pixel's 8-bit bin; the bins
    of 0 and 255 reach to -inf and +inf."""
    x = images.double() / 127.5 - 1.0  # the bin centres on the training scale
    half = 1.0 / 255.0  # half a bin: 256 bins across [-1, 1]
    normal = torch.distributions.Normal(x_hat.double(), sigma)
    upper = torch.where(images == 255, torch.inf, x + half)
    lower = torch.where(images == 0, -torch.inf, x - half)
    p = normal.cdf(upper) - normal.cdf(lower)
    return -p.clamp_min(1e-300).log().flatten(1).sum(1)


@torch.no_grad()
def reconstructions(model: VQVAE, images: Tensor, batch_size: int = 500):
    """Yield (uint8 images, reconstructions on the training scale) batch by batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for batch in images.split(batch_size):
        x = to_training_scale(batch.to(device)).contiguous(memory_format=torch.channels_last)
        yield batch, model(x).x_hat.float().cpu()
    model.train(was_training)


def fit_sigma(model: VQVAE, images: Tensor) -> float:
    """The decoder's noise level: the root mean squared reconstruction error, the maximum
    likelihood std of a Gaussian around the reconstruction (fit it on the training split)."""
    squared, count = 0.0, 0
    for batch, x_hat in reconstructions(model, images):
        squared += (x_hat.double() - to_training_scale(batch).double()).square().sum().item()
        count += batch.numel()
    return math.sqrt(squared / count)


def reconstruction_bits(model: VQVAE, images: Tensor, sigma: float) -> float:
    """The mean -log2 p(x | z) of the discretised Gaussian decoder, in bits per image."""
    nats = sum(
        discretized_gaussian_nats(x_hat, batch, sigma).sum().item()
        for batch, x_hat in reconstructions(model, images)
    )
    return bits(nats / len(images))


def bits_per_dim(reconstruction_bits: float, code_bits: float, dims: int = 3 * 32 * 32) -> float:
    """The evidence bound in bits per dimension: (-log2 p(x|z) - log2 p(z)) / dims."""
    return (reconstruction_bits + code_bits) / dims


def bits(nats: Tensor | float) -> Tensor | float:
    """Nats -> bits: divide by ln 2."""
    return nats / math.log(2)


class UnigramPrior(nn.Module):
    """Every position draws its code from the same frequencies: logits log(counts + 1).

    With `counts` all equal the logits are all zero: the uniform prior of VQ-VAE training.
    """

    def __init__(self, counts: Tensor, num_classes: int = 10):
        super().__init__()
        self.num_codes, self.num_classes = len(counts), num_classes
        logits = (counts.double() + 1).log()  # add-one smoothing: no code gets probability 0
        self.register_buffer("logits", (logits - logits.max()).float())  # (K,)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W) of every position's code."""
        check_codes(codes, self.num_codes)
        check_labels(labels, self.num_classes, len(codes))
        b, h, w = codes.shape
        return self.logits.view(1, -1, 1, 1).expand(b, -1, h, w)


@torch.no_grad()
def position_bits(prior: nn.Module, codes: Tensor, labels: Tensor, batch_size: int = 500) -> Tensor:
    """The mean negative log-likelihood, in bits, of the code at each position: (H, W)."""
    was_training = prior.training
    prior.eval()
    device = next(iter(prior.state_dict().values())).device
    total = torch.zeros(codes.shape[1:], dtype=torch.float64)
    for c, y in zip(codes.split(batch_size), labels.split(batch_size), strict=True):
        c, y = c.to(device), y.to(device)
        nll = F.cross_entropy(prior(c, y).float(), c, reduction="none")  # (b, H, W) nats
        total += nll.sum(0).double().cpu()
    prior.train(was_training)
    return bits(total / len(codes))


def bits_per_code(prior: nn.Module, codes: Tensor, labels: Tensor) -> float:
    """The mean negative log-likelihood of the codes, in bits per code."""
    return position_bits(prior, codes, labels).mean().item()


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


def dependencies(prior: nn.Module, grid: tuple[int, int] = (8, 8)) -> Tensor:
    """(T, T) bool for T = H*W positions in raster order: entry [p, q] is True when the logits
    at position p change with the code at position q, found by autograd through the prior's
    `embedding` of the codes."""
    h, w = grid
    device = next(prior.parameters()).device
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(prior.num_codes, (1, h, w), generator=generator).to(device)
    labels = torch.zeros(1, dtype=torch.int64, device=device)
    embedded = {}

    def keep(module, inputs, output):
        output.retain_grad()
        embedded["codes"] = output

    hook = prior.embedding.register_forward_hook(keep)
    rows = []
    try:
        for p in range(h * w):
            logits = prior(codes, labels)  # (1, K, H, W)
            logits[0, :, p // w, p % w].sum().backward()
            grad = embedded["codes"].grad.abs().sum(-1)  # (1, H, W, C) -> (1, H, W)
            rows.append(grad.flatten().cpu() > 0)  # -> (T,)
            prior.zero_grad()
    finally:
        hook.remove()
    return torch.stack(rows)


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


class GatedPixelCNN(nn.Module):
    """The gated PixelCNN of van den Oord et al. (2016b) over a grid of codes, conditioned on
    the class: a first 7x7 layer with mask A, then 3x3 layers with mask B."""

    def __init__(self, num_codes: int, num_classes: int, dim: int = 64, layers: int = 6):
        super().__init__()
        self.num_codes, self.num_classes = num_codes, num_classes
        self.embedding = nn.Embedding(num_codes, dim)
        self.blocks = nn.ModuleList(
            GatedBlock(dim, 7 if i == 0 else 3, num_classes, first=i == 0) for i in range(layers)
        )
        self.head = output_head(dim, num_codes)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W); position p sees codes < p."""
        check_codes(codes, self.num_codes)
        check_labels(labels, self.num_classes, len(codes))
        x = self.embedding(codes).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        v, h = x, x
        for block in self.blocks:
            v, h = block(v, h, labels)
        return self.head(h)


class MaskedPixelCNN(nn.Module):
    """The original PixelCNN's stack of plain masked convolutions, the same depth as the gated
    one: it has a blind spot above and to the right of every position."""

    def __init__(self, num_codes: int, num_classes: int, dim: int = 64, layers: int = 6):
        super().__init__()
        self.num_codes, self.num_classes = num_codes, num_classes
        self.embedding = nn.Embedding(num_codes, dim)
        self.label_bias = nn.Embedding(num_classes, dim)
        self.convs = nn.ModuleList(
            MaskedConv2d(dim, dim, causal_mask("plain", 7 if i == 0 else 3, first=i == 0))
            for i in range(layers)
        )
        self.head = output_head(dim, num_codes)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        check_codes(codes, self.num_codes)
        check_labels(labels, self.num_classes, len(codes))
        x = self.embedding(codes).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        bias = self.label_bias(labels)[:, :, None, None]  # (B, C, 1, 1)
        for i, conv in enumerate(self.convs):
            y = torch.relu(conv(x) + bias)
            x = y if i == 0 else x + y
        return self.head(x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions <= t only."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # -> 3 x (B, heads, T, C/heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))  # (B, heads, T, c) -> (B, T, C)


class TransformerBlock(nn.Module):
    """minGPT's block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CodeTransformer(nn.Module):
    """A small causal transformer over the codes in raster order. The class is the start
    token, so position t predicts code t from the class and codes 0..t-1."""

    def __init__(
        self,
        num_codes: int,
        num_classes: int,
        grid: tuple[int, int] = (8, 8),
        dim: int = 128,
        layers: int = 4,
        heads: int = 4,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be a multiple of heads, got dim {dim} and {heads} heads")
        self.num_codes, self.num_classes, self.grid = num_codes, num_classes, tuple(grid)
        self.embedding = nn.Embedding(num_codes, dim)
        self.start = nn.Embedding(num_classes, dim)  # one start token per class
        self.position = nn.Parameter(0.02 * torch.randn(1, grid[0] * grid[1], dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Codes (B, H, W), labels (B,) -> logits (B, K, H, W); position p sees codes < p."""
        check_codes(codes, self.num_codes, self.grid)
        check_labels(labels, self.num_classes, len(codes))
        b, h, w = codes.shape
        tokens = self.embedding(codes.flatten(1))  # (B, H, W) -> (B, T, C)
        x = torch.cat([self.start(labels)[:, None], tokens[:, :-1]], dim=1)  # shift right
        logits = self.head(self.norm(self.blocks(x + self.position)))  # (B, T, K)
        return logits.transpose(1, 2).reshape(b, -1, h, w)  # -> (B, K, H, W)


@dataclass
class PriorConfig:
    """Which prior and its sizes (chapter 8); `heads` is the transformer's only."""

    kind: str = "pixelcnn"  # "pixelcnn" (GatedPixelCNN) or "transformer" (CodeTransformer)
    num_codes: int = 512  # K of the VQ-VAE
    num_classes: int = 10
    grid: tuple[int, int] = (8, 8)  # the codes of one image: (H/4, W/4)
    dim: int = 64
    layers: int = 6
    heads: int = 4

    def __post_init__(self):
        self.grid = tuple(self.grid)
        if self.kind not in ("pixelcnn", "transformer"):
            raise ValueError(
                f"PriorConfig.kind must be 'pixelcnn' or 'transformer', got {self.kind!r}"
            )
        for name in ("num_codes", "num_classes", "dim", "layers", "heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f"PriorConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}"
                )


def build_prior(config: PriorConfig) -> nn.Module:
    """The prior that `config` describes, freshly initialised."""
    if config.kind == "pixelcnn":
        return GatedPixelCNN(config.num_codes, config.num_classes, config.dim, config.layers)
    return CodeTransformer(
        config.num_codes, config.num_classes, config.grid, config.dim, config.layers, config.heads
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The priors of the chapter (the cpu sizes) and larger ones for a GPU.
PRIOR_MODELS = {
    "cpu": {
        "pixelcnn": PriorConfig(kind="pixelcnn", dim=32, layers=6),
        "transformer": PriorConfig(kind="transformer", dim=64, layers=2, heads=4),
    },
    "gpu": {
        "pixelcnn": PriorConfig(kind="pixelcnn", dim=128, layers=15),
        "transformer": PriorConfig(kind="transformer", dim=256, layers=8, heads=8),
    },
}
PRIOR_PRESETS = {
    # A few minutes per prior on a 2-core CPU: one epoch of the 50,000 code grids.
    "cpu": TrainConfig(
        steps=800,
        batch_size=64,
        learning_rate=2e-3,
        warmup_steps=50,
        log_every=25,
        eval_every=200,
        checkpoint_every=400,
    ),
    # Many epochs of the 50,000 code grids.
    "gpu": TrainConfig(
        steps=20000,
        batch_size=256,
        learning_rate=5e-4,
        warmup_steps=500,
        log_every=100,
        eval_every=2000,
        checkpoint_every=2000,
    ),
}


class CodeBatches(ResidentBatches):
    """Endless shuffled batches of (codes (B, H, W), labels (B,)): chapter 0's
    `ResidentBatches`, the same epochs and the same resume, over code grids and their labels."""

    def __init__(self, codes: Tensor, labels: Tensor, batch_size: int, device, seed: int = 0):
        super().__init__(codes, batch_size, device, seed)  # self.images: the code grids
        self.labels = labels.to(device)

    def __next__(self) -> tuple[Tensor, Tensor]:
        index = self.next_indices()
        return self.images[index], self.labels[index]


class PriorTask(Task):
    """A prior for the loop of chapter 6: cross-entropy of every code given the codes before
    it and the class; the test split's bits per code as its evaluation."""

    def __init__(self, config: PriorConfig, train_config: TrainConfig, codes: CodeSplits):
        device = resolve_device(train_config.device)
        torch.manual_seed(train_config.seed)
        self.model = build_prior(config).to(device)
        self.batches = CodeBatches(
            codes.train, codes.train_labels, train_config.batch_size, device, train_config.seed
        )
        self.codes = codes
        self.identity = {"prior_config": asdict(config), "codes": codes.fingerprint()}

    def loss(self, batch: tuple[Tensor, Tensor]) -> StepOutput:
        codes, labels = batch
        loss = F.cross_entropy(self.model(codes, labels).float(), codes)  # nats per code
        return StepOutput(loss, {"loss": loss, "bits_per_code": bits(loss.detach())})

    def evaluate(self) -> dict:
        """Test bits per code, and the mean bits at each position (H, W)."""
        per_position = position_bits(self.model, self.codes.test, self.codes.test_labels)
        return {"bits_per_code": per_position.mean().item(), "position_bits": per_position}


@torch.no_grad()
def sample(
    prior: nn.Module,
    labels: Tensor,
    grid: tuple[int, int] = (8, 8),
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ancestral sampling in raster order: labels (B,) -> codes (B, H, W) int64.

    Each code is drawn from softmax(logits / temperature) given the codes drawn before it;
    a CPU `generator` makes the draws reproducible on any device.
    """
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"expected a temperature > 0, got {temperature!r}")
    was_training = prior.training
    prior.eval()
    device = next(iter(prior.state_dict().values())).device
    labels = labels.to(device)
    codes = torch.zeros(len(labels), *grid, dtype=torch.int64, device=device)
    for i in range(grid[0]):
        for j in range(grid[1]):
            logits = prior(codes, labels)[:, :, i, j].float() / temperature  # (B, K)
            probs = logits.softmax(dim=-1).cpu()
            codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)
    prior.train(was_training)
    return codes


def save_png(images: Tensor, path: str | Path, nrow: int = 10) -> Path:
    """Write uint8 images (N, 3, H, W) as one PNG grid, `nrow` to a row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = (image_grid(images, nrow=nrow) * 255).round().to(torch.uint8)  # (H', W', 3)
    Image.fromarray(grid.numpy()).save(path)
    return path


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vqvae_lite.prior",
        description="Train a prior over the codes of a trained VQ-VAE and sample images.",
    )
    add = parser.add_argument
    # fmt: off
    add("--vqvae", type=Path, required=True, help="checkpoint of a trained VQ-VAE")
    add("--out", type=Path, default=Path("runs/prior"), help="folder for the prior's "
        "checkpoint and samples.png (default: runs/prior)")
    add("--prior", choices=["pixelcnn", "transformer"], default="pixelcnn",
        help="gated PixelCNN or causal transformer (default: pixelcnn)")
    add("--preset", choices=sorted(PRIOR_PRESETS), help="sizes and recipe (default: gpu when a "
        "GPU is present, else cpu)")
    add("--steps", type=int, help="training steps (default: the preset's)")
    add("--data", help="the images the VQ-VAE was trained on (default: as load_cifar10)")
    add("--device", help="cpu, cuda, ... (default: cuda when present, else cpu)")
    add("--temperature", type=float, default=1.0, help="sampling temperature (default: 1)")
    add("--resume", action="store_true", help="continue the prior saved in --out")
    # fmt: on
    return parser


def train_prior(args: argparse.Namespace, config: TrainConfig, preset: str):
    """Load the VQ-VAE, encode the images (cached in --out), train or resume the prior.

    Returns the VQ-VAE, the prior's task and its run."""
    device = resolve_device(config.device)
    vqvae, _ = load_model(args.vqvae, device)
    splits = load_cifar10(args.data)
    codes = cached_codes(vqvae, splits, args.out / "codes.pt")
    prior_config = replace(
        PRIOR_MODELS[preset][args.prior],
        num_codes=codes.num_codes,
        num_classes=len(splits.classes),
        grid=tuple(codes.train.shape[1:]),
    )
    print(f"prior {prior_config} on {hardware(device)}: {config}")
    task = PriorTask(prior_config, config, codes)
    return vqvae, task, fit(task, config, args.out, args.resume)


def main(argv: list[str] | None = None) -> int:
    """Encode the images, train (or resume) the prior, sample 10 images per class."""
    args_parser = parser()
    args = args_parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        args_parser.error(f"--steps must be at least 1, got {args.steps}")
    if not args.temperature > 0:
        args_parser.error(f"--temperature must be > 0, got {args.temperature}")
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    changes = {"steps": args.steps, "device": args.device}
    changes = {key: value for key, value in changes.items() if value is not None}
    config = replace(PRIOR_PRESETS[preset], print_logs=True, **changes)
    try:
        vqvae, task, run = train_prior(args, config, preset)
    except (OSError, ValueError, CheckpointError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)  # a missing file, a held folder, bad input
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"trained {run.step} steps in {run.elapsed_s:.0f} s")
    num_codes = task.model.num_codes
    bits_text = f"{run.test['bits_per_code']:.3f} bits per code"
    print(f"test: {bits_text} (uniform: {math.log2(num_codes):.3f})")
    labels = torch.arange(task.model.num_classes).repeat_interleave(10)  # 10 per class
    generator = torch.Generator().manual_seed(config.seed)
    grid = tuple(task.codes.train.shape[1:])
    sampled = sample(task.model, labels, grid, args.temperature, generator)
    path = save_png(decode_codes(vqvae, sampled), args.out / "samples.png", nrow=10)
    print(f"checkpoint: {args.out / CHECKPOINT}\nsamples (one row per class): {path}")
    return 0


if __name__ == "__main__" and "ipykernel" not in sys.modules:  # python -m vqvae_lite.prior
    sys.exit(main())
