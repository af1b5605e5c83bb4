"""Training quality and speed for the same wall-clock budget: vqvae-lite's CPU preset against a
reproduction of MishaLaskin/vqvae's training, in the same run, on the offline CIFAR-10 copy.

    python benchmarks/train_quality.py [--seconds 300] [--data PATH] [--only lite|mishalaskin]

(a) vqvae-lite: `vqvae_lite.train.train` with the CPU preset (EMA codebook, dead-code restarts,
    batch 128, Adam with warmup and cosine decay, data resident as uint8), stopped by the budget.
(b) MishaLaskin/vqvae: the widely copied PyTorch VQ-VAE trained as published, written out below
    and labelled as such, with its architecture and the five mistakes of its training code.

Both are measured on the test split with the same `vqvae_lite.metrics.evaluate` and the true
training-scale variance. Prints, for each: steps, img/s, test NMSE, PSNR, perplexity and codes
used; then the ratios of one to the other. A benchmark, not a timed test: numbers move with the
load of the machine, so both sides run in the same process, one after the other.
"""

import argparse
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from vqvae_lite.codebook_upkeep import DEFAULT_MODELS
from vqvae_lite.data import find_offline_copy, load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.image_cache import cache_dir
from vqvae_lite.metrics import evaluate
from vqvae_lite.train import PRESETS, train
from vqvae_lite.training_scale import training_variance

# ==== (b) MishaLaskin/vqvae's training, reproduced as published, mistakes included =============
# This is deliberately NOT vqvae-lite's code. Each bug is marked where it lives.


class MishaLaskinResidualLayer(nn.Module):
    def __init__(self, in_dim, h_dim, res_h_dim):
        super().__init__()
        self.res_block = nn.Sequential(
            nn.ReLU(True),  # mistake: in-place ReLU first, so the skip path adds relu(x), not x
            nn.Conv2d(in_dim, res_h_dim, kernel_size=3, stride=1, padding=1, bias=False),
            nn.ReLU(True),
            nn.Conv2d(res_h_dim, h_dim, kernel_size=1, stride=1, bias=False),
        )

    def forward(self, x):
        return x + self.res_block(x)


class MishaLaskinResidualStack(nn.Module):
    def __init__(self, in_dim, h_dim, res_h_dim, n_res_layers):
        super().__init__()
        # mistake: one layer repeated, so the n layers share their weights
        layer = MishaLaskinResidualLayer(in_dim, h_dim, res_h_dim)
        self.stack = nn.ModuleList([layer] * n_res_layers)

    def forward(self, x):
        for layer in self.stack:
            x = layer(x)
        return F.relu(x)


class MishaLaskinVQVAE(nn.Module):
    def __init__(self, h_dim=128, res_h_dim=32, n_res_layers=2, n_embeddings=512, embedding_dim=64):
        super().__init__()
        beta = 0.25
        self.encoder = nn.Sequential(
            nn.Conv2d(3, h_dim // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h_dim // 2, h_dim, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h_dim, h_dim, 3, stride=1, padding=1),
            MishaLaskinResidualStack(h_dim, h_dim, res_h_dim, n_res_layers),
        )  # fmt: skip
        self.pre_quantization_conv = nn.Conv2d(h_dim, embedding_dim, kernel_size=1, stride=1)
        self.embedding = nn.Embedding(n_embeddings, embedding_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embeddings, 1.0 / n_embeddings)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(embedding_dim, h_dim, 3, stride=1, padding=1),
            MishaLaskinResidualStack(h_dim, h_dim, res_h_dim, n_res_layers),
            nn.ConvTranspose2d(h_dim, h_dim // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(h_dim // 2, 3, 4, stride=2, padding=1),
        )  # fmt: skip
        self.n_e, self.e_dim, self.beta = n_embeddings, embedding_dim, beta

    def forward(self, x):
        z = self.pre_quantization_conv(self.encoder(x)).permute(0, 2, 3, 1).contiguous()
        z_flattened = z.view(-1, self.e_dim)
        d = (
            torch.sum(z_flattened**2, dim=1, keepdim=True)
            + torch.sum(self.embedding.weight**2, dim=1)
            - 2 * torch.matmul(z_flattened, self.embedding.weight.t())
        )
        min_encoding_indices = torch.argmin(d, dim=1).unsqueeze(1)
        min_encodings = torch.zeros(min_encoding_indices.shape[0], self.n_e, device=x.device)
        min_encodings.scatter_(1, min_encoding_indices, 1)  # the one-hot lookup, (N, K)
        z_q = torch.matmul(min_encodings, self.embedding.weight).view(z.shape)
        # mistake: the codebook and commitment terms swapped, so beta weights the codebook term
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        x_hat = self.decoder(z_q.permute(0, 3, 1, 2).contiguous())
        e_mean = torch.mean(min_encodings, dim=0)
        perplexity = torch.exp(-torch.sum(e_mean * torch.log(e_mean + 1e-10)))
        return loss, x_hat, perplexity, min_encoding_indices.view(z.shape[:3])


def mishalaskin_training(train_folder: Path, train_images: torch.Tensor, seconds: float) -> tuple:
    """MishaLaskin/vqvae's main loop for `seconds`: batch 32, Adam 3e-4 with amsgrad, a fresh
    DataLoader iterator every step over an ImageFolder with per-image ToTensor + Normalize."""
    torch.manual_seed(0)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    )
    training_data = datasets.ImageFolder(train_folder, transform=transform)
    training_loader = DataLoader(training_data, batch_size=32, shuffle=True, pin_memory=False)
    x_train_var = np.var(train_images.numpy() / 255.0)  # mistake: variance on [0, 1] pixels
    model = MishaLaskinVQVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, amsgrad=True)
    model.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        (x, _) = next(iter(training_loader))  # mistake: a new iterator (and permutation) per step
        optimizer.zero_grad()
        embedding_loss, x_hat, perplexity, _ = model(x)
        recon_loss = torch.mean((x_hat - x) ** 2) / x_train_var  # trains on [-1, 1]: 4x weight
        loss = recon_loss + embedding_loss
        loss.backward()
        optimizer.step()
        steps += 1
    return model, steps, time.perf_counter() - start


class MishaLaskinForEvaluation(nn.Module):
    """Presents MishaLaskin/vqvae's outputs as `vqvae_lite.metrics.evaluate` expects them."""

    def __init__(self, reference_model: MishaLaskinVQVAE):
        super().__init__()
        self.reference_model = reference_model
        self.config = SimpleNamespace(num_codes=reference_model.n_e)

    def forward(self, x):
        _, x_hat, _, indices = self.reference_model(x.contiguous())
        return SimpleNamespace(x_hat=x_hat, indices=indices)


# ==== the comparison =============================================================================


def extracted_train_folder(archive: Path) -> Path:
    """The offline copy's train/ folder, extracted once into the cache (the reference reads files
    one by one)."""
    folder = cache_dir() / "benchmark-imagefolder"
    if not (folder / "done").is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        (folder / "done").touch()
    return next(path for path in folder.rglob("train") if path.is_dir())


def report(name: str, steps: int, batch: int, seconds: float, test: dict) -> dict:
    rate = steps * batch / seconds
    row = dict(name=name, steps=steps, rate=rate, **test)
    print(
        f"{name}: {steps} steps of {batch} in {seconds:.0f} s = {rate:.0f} img/s "
        f"| test NMSE {test['nmse']:.4f} | PSNR {test['psnr']:.2f} dB"
        f" | perplexity {test['perplexity']:.1f} | codes used {test['codes_used']}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training budget of each")
    parser.add_argument("--data", help="offline copy (default: shared/data/cifar10-jpeg.tar.gz)")
    parser.add_argument("--only", choices=["lite", "mishalaskin"], help="run one side only")
    args = parser.parse_args()
    archive = Path(args.data) if args.data else find_offline_copy()
    if archive is None:
        raise SystemExit("no offline copy found: pass --data path/to/cifar10-jpeg.tar.gz")
    splits = load_cifar10(archive)
    variance = training_variance(splits.train)  # the true one, for both evaluations
    print(
        f"{splits.source}: {len(splits.train)} train / {len(splits.test)} test images; "
        f"{args.seconds:.0f} s of training each on {hardware(resolve_device('cpu'))}, "
        f"torch {torch.__version__}",
        flush=True,
    )
    rows = []
    if args.only != "mishalaskin":
        config = replace(
            PRESETS["cpu"], device="cpu", steps=10**9, time_budget_s=args.seconds,
            checkpoint_every=10**9,
        )  # fmt: skip
        result = train(DEFAULT_MODELS["cpu"], config, splits)
        test = evaluate(result.model, splits.test, variance)
        seconds = result.wall_time_s
        rows.append(report("vqvae-lite cpu preset", result.steps, config.batch_size, seconds, test))
    if args.only != "lite":
        folder = extracted_train_folder(archive)
        model, steps, seconds = mishalaskin_training(folder, splits.train, args.seconds)
        test = evaluate(MishaLaskinForEvaluation(model), splits.test, variance)
        rows.append(report("MishaLaskin/vqvae reproduction", steps, 32, seconds, test))
    if len(rows) == 2:
        lite, reference = rows
        # fmt: off
        print("\n| | vqvae-lite cpu preset | MishaLaskin/vqvae reproduction | ratio / difference |")
        print("|---|---|---|---|")
        print(f"| steps | {lite['steps']} | {reference['steps']} | |")
        print(f"| img/s | {lite['rate']:.0f} | {reference['rate']:.0f} | "
              f"{lite['rate'] / reference['rate']:.2f}x |")
        print(f"| test NMSE | {lite['nmse']:.4f} | {reference['nmse']:.4f} | "
              f"{lite['nmse'] / reference['nmse']:.2f}x |")
        print(f"| test PSNR (dB) | {lite['psnr']:.2f} | {reference['psnr']:.2f} | "
              f"{lite['psnr'] - reference['psnr']:+.2f} dB |")
        print(f"| perplexity | {lite['perplexity']:.1f} | {reference['perplexity']:.1f} | |")
        print(f"| codes used (of 512) | {lite['codes_used']} | {reference['codes_used']} | |")
        print("targets: PSNR >= MishaLaskin + 5 dB, codes used >= 500, img/s >= 1.3x MishaLaskin")
        # fmt: on


if __name__ == "__main__":
    main()
