# Generated from notebooks/05_decoder.ipynb by tools/export.py: edit the notebook.
"""The whole VQ-VAE: encoder -> 1x1 pre-quantisation conv -> quantiser -> decoder.

Chapter 5 (`notebooks/05_decoder.ipynb`) assembles it and runs one forward and backward pass.
"""

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from vqvae_lite.decoder import Decoder
from vqvae_lite.encoder import Encoder
from vqvae_lite.quantizer import build_quantizer


@dataclass
class ModelConfig:
    """Sizes of the model; defaults: h=128, 2 residual layers of 32, D=64, K=512, beta=0.25."""

    in_channels: int = 3
    hidden: int = 128  # h: channels of the encoder and decoder trunk
    residual_hidden: int = 32  # channels inside each residual layer
    residual_layers: int = 2
    embedding_dim: int = 64  # D: length of each code vector
    num_codes: int = 512  # K: number of codes in the codebook
    beta: float = 0.25  # weight of the commitment term, for quantisers that have one
    quantizer: str = "vq"  # a name in vqvae_lite.quantizer.QUANTIZERS
    quantizer_options: dict = field(default_factory=dict)  # extra arguments of that quantiser

    def __post_init__(self):
        for name in ("in_channels", "hidden", "residual_hidden", "embedding_dim", "num_codes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be an integer >= 1, got {value!r}")
        layers = self.residual_layers
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
            raise ValueError(
                f"ModelConfig.residual_layers must be an integer >= 0, got {self.residual_layers!r}"
            )
        if self.hidden % 2:
            raise ValueError(f"ModelConfig.hidden must be even (h/2 channels), got {self.hidden}")
        if not (isinstance(self.beta, int | float) and math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"ModelConfig.beta must be finite and >= 0, got {self.beta!r}")
        if not isinstance(self.quantizer, str):
            raise ValueError(f"ModelConfig.quantizer must be a name, got {self.quantizer!r}")
        if not isinstance(self.quantizer_options, dict):
            options = self.quantizer_options
            raise ValueError(f"ModelConfig.quantizer_options must be a dict, got {options!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VQVAEOutput:
    """Everything one forward pass produces, for the loss and for inspection."""

    x_hat: Tensor  # (B, 3, H, W) reconstruction on the training scale
    z_e: Tensor  # (B, D, H/4, W/4) encoder output after the 1x1 conv
    z_q: Tensor  # (B, D, H/4, W/4) quantised, with a gradient path to z_e
    indices: Tensor  # (B, H/4, W/4) int64
    losses: dict[str, Tensor]  # the quantiser's own weighted loss terms


def check_images(x: Tensor, channels: int) -> None:
    """Raise a ValueError naming the expected shape (B, channels, H, W) for unusable input."""
    expected = f"expected float images of shape (B, {channels}, H, W) with H, W divisible by 4"
    if not isinstance(x, Tensor):
        raise ValueError(f"{expected}, got {type(x).__name__} (use torch.as_tensor first)")
    if x.dim() != 4:
        raise ValueError(f"{expected}, got rank {x.dim()} with shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{expected}, got {x.shape[1]} channels in shape {tuple(x.shape)}")
    if x.shape[2] % 4 or x.shape[3] % 4 or 0 in x.shape:
        raise ValueError(f"{expected}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{expected}, got dtype {x.dtype} (scale uint8 pixels to [-1, 1] first)")
    if not torch.compiler.is_compiling() and not torch.isfinite(x).all():
        raise ValueError(f"{expected} with finite values, got NaN or inf")


class VQVAE(nn.Module):
    """The VQ-VAE of van den Oord et al. (2017), with MishaLaskin/vqvae's CIFAR-10 sizes."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        self.encoder = Encoder(
            config.in_channels, config.hidden, config.residual_hidden, config.residual_layers
        )
        self.pre_quantization = nn.Conv2d(config.hidden, config.embedding_dim, kernel_size=1)
        self.quantizer = build_quantizer(
            config.quantizer,
            num_codes=config.num_codes,
            dim=config.embedding_dim,
            beta=config.beta,
            **config.quantizer_options,
        )
        self.decoder = Decoder(
            config.embedding_dim,
            config.hidden,
            config.residual_hidden,
            config.residual_layers,
            config.in_channels,
        )

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, D, H/4, W/4) continuous latents z_e."""
        check_images(x, self.config.in_channels)
        x = x.to(self.pre_quantization.weight.dtype)  # float64 or float16 input: our precision
        return self.pre_quantization(self.encoder(x))

    def forward(self, x: Tensor) -> VQVAEOutput:
        z_e = self.encode(x)  # (B, 3, 32, 32) -> (B, D, 8, 8)
        quantized = self.quantizer(z_e)
        x_hat = self.decoder(quantized.z_q)  # (B, D, 8, 8) -> (B, 3, 32, 32)
        return VQVAEOutput(x_hat, z_e, quantized.z_q, quantized.indices, quantized.losses)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B, h, w) code indices -> (B, 3, 4h, 4w) images on the training scale."""
        return self.decoder(self.quantizer.decode(indices))  # (B, D, h, w) -> (B, 3, 4h, 4w)
