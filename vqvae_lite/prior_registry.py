# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""The registry of priors: what every prior over codes is, and how one is built by name,
as chapter 3's quantisers are; and `dependencies`, which checks by autograd that a prior is
causal.

A prior is a module with `num_codes` and `num_classes` that maps codes (B, H, W) and class
labels (B,) to logits (B, K, H, W), where the logits at position p (in raster order) depend
only on the class and the codes before p. A new prior is one module and one
`@register_prior("name")` line; it is built as `cls(num_codes=, num_classes=, grid=,
**options)`.

Chapter 8 (`notebooks/08_prior.ipynb`) builds the gated PixelCNN and the transformer this way.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

PRIORS: dict[str, type[nn.Module]] = {}  # name -> class: the one registry of priors


def register_prior(name: str):
    """Class decorator: make a prior available as `PriorConfig(name)` and `--prior name`."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        PRIORS[name] = cls
        return cls

    return register


def check_sizes(owner: str, **sizes) -> None:
    """Raise a ValueError naming the first of `sizes` that is not an integer >= 1."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}.{name} must be an integer >= 1, got {value!r}")


@dataclass
class PriorConfig:
    """Which prior, by its registered name, for which codes, with its own options."""

    name: str = "pixelcnn"  # a name in PRIORS
    num_codes: int = 512  # the VQ-VAE's index space: model.quantizer.num_codes
    num_classes: int = 10
    grid: tuple[int, int] = (8, 8)  # the codes of one image: (H/4, W/4)
    options: dict = field(default_factory=dict)  # the prior's own sizes: dim, layers, ...

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ValueError(f"PriorConfig.name must be a registered name, got {self.name!r}")
        if not (isinstance(self.grid, tuple | list) and len(self.grid) == 2):
            raise ValueError(f"PriorConfig.grid must be (height, width), got {self.grid!r}")
        self.grid = tuple(self.grid)
        height, width = self.grid
        check_sizes("PriorConfig", num_codes=self.num_codes, num_classes=self.num_classes)
        check_sizes("PriorConfig.grid", height=height, width=width)
        if not isinstance(self.options, dict):
            raise ValueError(f"PriorConfig.options must be a dict, got {self.options!r}")


def build_prior(config: PriorConfig) -> nn.Module:
    """The registered prior `config.name`, freshly initialised for the codes `config` names."""
    if config.name not in PRIORS:
        known = ", ".join(sorted(PRIORS))
        raise ValueError(f"unknown prior {config.name!r}; registered: {known}")
    sizes = dict(num_codes=config.num_codes, num_classes=config.num_classes, grid=config.grid)
    try:
        return PRIORS[config.name](**sizes, **config.options)
    except TypeError as error:
        options = f"prior {config.name!r} cannot take options {config.options}"
        raise ValueError(f"{options}: {error}") from None


def parameter_count(model: nn.Module) -> int:
    """How many numbers the model learns."""
    return sum(p.numel() for p in model.parameters())


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
