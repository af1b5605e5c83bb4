"""An independent judge of sample quality: a small CIFAR-10 classifier, trained once and kept,
says how often an image sampled for a class looks like that class to it.

    python benchmarks/sample_judge.py --vqvae SOURCE --prior NAME=SOURCE [--prior NAME=SOURCE]
        [--images 1000] [--temperatures 1.0 0.7] [--guidance 0] [--seeds 0]
        [--cache runs/judge/classifier.pt] [--results FILE] [--device auto]
    python benchmarks/sample_judge.py --judge-only [--cache PATH] [--device auto]

A VQ-VAE SOURCE is a checkpoint or a shipped name ("default"); a prior SOURCE is a prior
checkpoint or a shipped name ("transformer"). The judge (`JudgeNet`, `RECIPE`: 84 % on the test
split) trains once, in about 13 CPU-minutes of one core, and is read from `--cache` afterwards,
under a key naming its recipe and the training images. Prints, as shares of images the judge
assigns to their own class (chance is 10 %): the first N test images (the ceiling), their
reconstructions through the VQ-VAE, and N class-conditional samples of each prior at each
temperature and guidance (`vqvae_lite.sampling.sample`'s; a guided row takes ten times as
long), N/10 per class, once per sampling seed (`--seeds 0 1 2` shows how much of a difference
between two rows is the luck of the draw).
"""

import argparse
import hashlib
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from vqvae_lite.code_dataset import decode_codes, encode_codes
from vqvae_lite.data import load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.metrics import evaluation_mode
from vqvae_lite.safe_files import load_under_key, save_under_key
from vqvae_lite.sampling import sample
from vqvae_lite.shipped import load_vqvae
from vqvae_lite.shipped_priors import load_prior

TRUSTED_ACCURACY = 0.75  # under this test accuracy the judge is too weak to trust


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """A 3x3 convolution, batch norm and ReLU: (B, c_in, H, W) -> (B, c_out, H, W)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """x + two conv_bn blocks of x: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class JudgeNet(nn.Module):
    """A compact CIFAR-10 classifier: uint8 images (B, 3, 32, 32) -> class logits (B, 10).

    It standardises its input itself (to [-1, 1], then per channel with the training images'
    mean and standard deviation, kept as buffers), so callers pass the images as they are.
    The logits are scaled down by `logit_scale`, so that training starts from calm ones.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 128),
        logit_scale: float = 0.125,
        num_classes: int = 10,
    ):
        super().__init__()
        c1, c2, c3 = widths
        self.logit_scale = logit_scale
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        self.features = nn.Sequential(
            conv_bn(3, c1),
            nn.MaxPool2d(2),  # (B, c1, 16, 16)
            conv_bn(c1, c2),
            nn.MaxPool2d(2),  # (B, c2, 8, 8)
            Residual(c2),
            conv_bn(c2, c3),
            nn.MaxPool2d(2),  # (B, c3, 4, 4)
            Residual(c3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),  # (B, c3)
        )
        self.head = nn.Linear(c3, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1.0  # (B, 3, 32, 32) in [-1, 1]
        x = (x - self.mean) / self.std
        return self.head(self.features(x)) * self.logit_scale  # (B, 3, 32, 32) -> (B, 10)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the judge's weights, besides the training images."""

    widths: tuple[int, int, int] = (32, 64, 128)
    logit_scale: float = 0.125
    epochs: int = 10
    batch_size: int = 256
    peak_lr: float = 0.2  # SGD with Nesterov momentum, one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0


RECIPE = Recipe()


def judge_for(recipe: Recipe) -> JudgeNet:
    """The untrained network of a recipe."""
    return JudgeNet(recipe.widths, recipe.logit_scale)


def digest(tensor: Tensor) -> str:
    """A short sha256 of a tensor's bytes."""
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def cache_key(recipe: Recipe, train_images: Tensor, train_labels: Tensor) -> str:
    """Names the recipe, the network's layers and the training data: any change retrains."""
    network = hashlib.sha256(repr(judge_for(recipe)).encode()).hexdigest()[:16]
    data = digest(train_images) + digest(train_labels)
    return f"{recipe!r} network {network} train images {data}"


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random 32x32 crops of the images padded by 4 pixels (reflected), half of them flipped
    left to right: uint8 (B, 3, 32, 32) -> float (B, 3, 32, 32) in [0, 255]."""
    batch, _, height, width = images.shape
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="reflect")  # (B, 3, H + 8, W + 8)
    top = torch.randint(9, (batch, 1, 1, 1), generator=generator)
    left = torch.randint(9, (batch, 1, 1, 1), generator=generator)
    rows = top + torch.arange(height).view(1, 1, -1, 1)  # (B, 1, H, 1)
    cols = left + torch.arange(width).view(1, 1, 1, -1)  # (B, 1, 1, W)
    index = torch.arange(batch).view(-1, 1, 1, 1), torch.arange(3).view(1, -1, 1, 1)
    crops = padded[index[0], index[1], rows, cols]  # (B, 3, H, W)
    flip = torch.rand(batch, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), crops.flip(3), crops)


def train_judge(splits, recipe: Recipe, device: torch.device) -> JudgeNet:
    """Train a JudgeNet on the training split: seeded, so the same recipe gives the same net."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)  # batches and augmentation
    model = judge_for(recipe)
    scaled = splits.train.float() / 127.5 - 1.0  # (N, 3, 32, 32)
    model.mean.copy_(scaled.mean(dim=(0, 2, 3)).view(1, 3, 1, 1))
    model.std.copy_(scaled.std(dim=(0, 2, 3)).view(1, 3, 1, 1))
    model = model.to(device, memory_format=torch.channels_last).train()
    steps_per_epoch = len(splits.train) // recipe.batch_size
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.peak_lr,
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, recipe.peak_lr, total_steps=recipe.epochs * steps_per_epoch
    )
    progress = tqdm(total=recipe.epochs * steps_per_epoch, desc="training the judge")
    for _ in range(recipe.epochs):
        order = torch.randperm(len(splits.train), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            images = augment(splits.train[index], generator).to(device)  # (B, 3, 32, 32)
            images = images.contiguous(memory_format=torch.channels_last)
            labels = splits.train_labels[index].to(device)  # (B,)
            logits = model(images)  # (B, 3, 32, 32) -> (B, 10)
            loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    return model.eval()


def cached_judge(splits, path: Path, device: torch.device, recipe: Recipe = RECIPE) -> JudgeNet:
    """The judge saved in `path` under the key of this recipe and these training images, or
    one trained now and saved there (atomically) when the file holds no such judge."""
    key = cache_key(recipe, splits.train, splits.train_labels)
    weights = load_under_key(path, key)
    if weights is None:
        start = time.perf_counter()
        model = train_judge(splits, recipe, device)
        print(f"trained the judge in {time.perf_counter() - start:.0f} s on {hardware(device)}")
        save_under_key(path, key, {k: v.cpu() for k, v in model.state_dict().items()})
        return model
    model = judge_for(recipe)
    model.load_state_dict(weights)
    print(f"read the judge from {path}")
    return model.to(device, memory_format=torch.channels_last).eval()


@torch.no_grad()
def predicted_classes(classifier: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """The classifier's class for each image: uint8 (N, 3, H, W) -> (N,) int64 on the CPU."""
    device = next(iter(classifier.state_dict().values())).device
    with evaluation_mode(classifier):
        logits = [classifier(batch.to(device)).cpu() for batch in images.split(batch_size)]
    return torch.cat(logits).argmax(1)  # (N, 10) -> (N,)


def judged_share(classifier: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The share of the images that the classifier assigns to the class they are labelled with."""
    return (predicted_classes(classifier, images) == labels).float().mean().item()


def share_per_class(correct: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(N,) bool judged right, (N,) labels -> (num_classes,) share judged right in each class."""
    right = torch.bincount(labels, weights=correct.double(), minlength=num_classes)
    return right / torch.bincount(labels, minlength=num_classes).clamp(min=1)


def sample_images(
    prior, vqvae, labels: Tensor, grid, temperature: float, guidance: float, seed: int
) -> Tensor:
    """Class-conditional samples, decoded: labels (N,) -> uint8 images (N, 3, 4h, 4w), drawn
    250 at a time from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            decode_codes(vqvae, sample(prior, batch, grid, temperature, generator, guidance))
            for batch in tqdm(labels.split(250), desc="sampling", leave=False)
        ]
    )


def prior_spec(text: str) -> tuple[str, str]:
    """'NAME=SOURCE' -> (NAME, SOURCE), for argparse."""
    name, equals, source = text.partition("=")
    if not (name and equals and source):
        raise argparse.ArgumentTypeError(f"expected NAME=SOURCE, got {text!r}")
    return name, source


def judge_table(args, judge: JudgeNet, splits, device: torch.device) -> list[str]:
    """The table's lines: the judge's share of real test images, of their reconstructions and of
    each prior's samples at each temperature."""
    vqvae, _ = load_vqvae(args.vqvae, device=device)
    num_classes = len(splits.classes)
    images, labels = splits.test[: args.images], splits.test_labels[: args.images]
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    codes = encode_codes(vqvae, images)  # (N, h, w)
    grid = tuple(codes.shape[1:])  # (h, w): what the priors sample
    seed_label = len(args.seeds) > 1
    sample_names = {
        (name, temperature, guidance, seed): f"samples {name} T={temperature:g}"
        + (f" guidance {guidance:g}" if guidance else "")
        + (f" seed {seed}" if seed_label else "")
        for name, _ in args.prior
        for temperature in args.temperatures
        for guidance in args.guidance
        for seed in args.seeds
    }
    width = max(len(label) for label in ["real test images", *sample_names.values()])
    lines = [
        f"first {len(images)} test images per class: "
        + ", ".join(f"{name} {count}" for name, count in zip(splits.classes, counts, strict=True)),
        f"share judged to be of their own class (chance is {1 / num_classes:.0%}), "
        f"overall and per class",
        f"{'images':>{width}} | {'sample s':>8} | {'share':>6} | "
        + " ".join(f"{name[:5]:>5}" for name in splits.classes),
    ]

    def row(name: str, judged: Tensor, labels: Tensor, seconds: float | None = None) -> str:
        correct = predicted_classes(judge, judged) == labels
        per_class = share_per_class(correct, labels, num_classes)
        time_taken = "" if seconds is None else f"{seconds:.0f}"
        shares = " ".join(f"{share:5.0%}" for share in per_class.tolist())
        return f"{name:>{width}} | {time_taken:>8} | {correct.float().mean():6.1%} | {shares}"

    lines.append(row("real test images", images, labels))
    lines.append(row("reconstructions", decode_codes(vqvae, codes), labels))
    wanted = torch.arange(num_classes).repeat_interleave(args.images // num_classes)  # (N,)
    for name, source in args.prior:
        prior = load_prior(source, device=device)
        settings = [
            (t, g, seed) for t in args.temperatures for g in args.guidance for seed in args.seeds
        ]
        for temperature, guidance, seed in settings:
            start = time.perf_counter()
            samples = sample_images(prior, vqvae, wanted, grid, temperature, guidance, seed)
            seconds = time.perf_counter() - start
            label = sample_names[name, temperature, guidance, seed]
            lines.append(row(label, samples, wanted, seconds))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqvae", help="a VQ-VAE checkpoint or a shipped name (default)")
    parser.add_argument(
        "--prior", type=prior_spec, action="append", default=[], help="NAME=SOURCE, repeatable"
    )
    parser.add_argument("--images", type=int, default=1000, help="test images and samples")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7])
    parser.add_argument(
        "--guidance", type=float, nargs="+", default=[0.0], help="0: none (the default)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="of the samples, one row each"
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/judge/classifier.pt"))
    parser.add_argument("--results", type=Path, help="also write the table to this file")
    parser.add_argument("--judge-only", action="store_true", help="train or read the judge only")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    args = parser.parse_args()
    if not args.judge_only and not (args.vqvae and args.prior):
        parser.error("--vqvae and at least one --prior are needed, unless --judge-only")

    device = resolve_device(args.device)
    splits = load_cifar10()
    judge = cached_judge(splits, args.cache, device)
    accuracy = judged_share(judge, splits.test, splits.test_labels)
    parameters = sum(p.numel() for p in judge.parameters())
    lines = [
        f"judge: {RECIPE}, {parameters:,d} parameters; "
        f"test accuracy {accuracy:.2%} on {len(splits.test)} images"
    ]
    if accuracy < TRUSTED_ACCURACY:
        lines.append(
            f"WARNING: the judge's test accuracy is under {TRUSTED_ACCURACY:.0%}: "
            "too weak to trust its shares"
        )
    if not args.judge_only:
        lines += judge_table(args, judge, splits, device)
    print("\n".join(lines))
    if args.results:
        command = shlex.join(["python", *sys.argv])
        header = f"# command: {command}\n# torch {torch.__version__}, {hardware(device)}\n"
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(header + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
