# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Metrics: test-split NMSE, PSNR, perplexity and codes used; running training logs.

Chapter 6 (`notebooks/06_training.ipynb`) checks each metric by hand and evaluates with them.
"""

import math
import time

import torch
from torch import nn

from vqvae_lite.codebook import code_counts, codes_used, perplexity
from vqvae_lite.data import from_training_scale, to_training_scale
from vqvae_lite.losses import LossTerms


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(peak^2 / MSE), for pixels in [0, peak]."""
    return 10.0 * math.log10(peak**2 / mse)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, data_variance: float, batch_size: int = 500
) -> dict:
    """Reconstruct every image of a split, (N, 3, H, W) uint8, and measure over the whole split:

    - `nmse`: MSE on the training scale [-1, 1] divided by the training-set variance;
    - `psnr`: PSNR in dB of the reconstructions clamped to [0, 1], as they are displayed;
    - `perplexity` and `codes_used` of all N*h*w code indices, and `code_counts` (K,).
    """
    was_training = model.training
    model.eval()  # an EMA codebook must not learn from the test split
    device = next(model.parameters()).device
    squared_error, squared_error_01, indices = 0.0, 0.0, []
    for batch in images.split(batch_size):
        x = to_training_scale(batch.to(device)).contiguous(memory_format=torch.channels_last)
        output = model(x)
        x_hat = output.x_hat.float()
        squared_error += (x_hat - x).square().sum().item()
        error_01 = from_training_scale(x_hat) - from_training_scale(x)  # clamped to [0, 1]
        squared_error_01 += error_01.square().sum().item()
        indices.append(output.indices.flatten().cpu())  # (B, h, w) -> (B*h*w,)
    model.train(was_training)
    indices = torch.cat(indices)
    num_codes = model.config.num_codes
    return {
        "nmse": squared_error / images.numel() / data_variance,
        "psnr": psnr(squared_error_01 / images.numel()),
        "perplexity": perplexity(indices, num_codes),
        "codes_used": codes_used(indices, num_codes),
        "code_counts": code_counts(indices, num_codes),
    }


class LogWindow:
    """Running sums over the steps since the last history row, kept on the training device."""

    def __init__(self, num_codes: int, device: torch.device):
        self.totals = torch.zeros(3, device=device)  # loss, nmse, commitment
        self.counts = torch.zeros(num_codes, dtype=torch.int64, device=device)
        self.steps, self.restarted = 0, 0
        self.timed_steps, self.started = 0, time.perf_counter()  # for images per second

    def add(self, terms: LossTerms, indices: torch.Tensor, restarted: int) -> None:
        parts = torch.stack([terms.total, terms.reconstruction, terms.commitment]).detach()
        self.totals += parts.float()
        self.counts += code_counts(indices, len(self.counts))
        self.steps, self.restarted = self.steps + 1, self.restarted + restarted
        self.timed_steps += 1

    def row(self, step: int, epoch: int, lr: float, elapsed_s: float, batch_size: int) -> dict:
        """One history row: means over the window, and the usage of all its code indices."""
        loss, nmse, commitment = (self.totals / self.steps).tolist()
        probs = self.counts.double() / self.counts.sum()  # (K,) share of each code
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
        seconds = time.perf_counter() - self.started
        return dict(
            step=step,
            epoch=epoch,
            learning_rate=lr,
            loss=loss,
            nmse=nmse,
            commitment=commitment,
            perplexity=entropy.exp().item(),
            codes_used=int((self.counts > 0).sum()),
            restarted=self.restarted,
            elapsed_s=elapsed_s,
            images_per_s=self.timed_steps * batch_size / seconds,
        )

    def state_dict(self) -> dict:
        """The sums so far, so that a resumed run logs the same rows."""
        return dict(
            totals=self.totals.cpu(),
            counts=self.counts.cpu(),
            steps=self.steps,
            restarted=self.restarted,
        )

    def load_state_dict(self, state: dict) -> None:
        self.totals.copy_(state["totals"])
        self.counts.copy_(state["counts"])
        self.steps, self.restarted = state["steps"], state["restarted"]


def format_metrics(metrics: dict) -> str:
    """One line for the test metrics of `evaluate`."""
    return (
        f"NMSE {metrics['nmse']:.4f} | PSNR {metrics['psnr']:.2f} dB | "
        f"perplexity {metrics['perplexity']:.1f} | codes used {metrics['codes_used']}"
    )


def format_row(row: dict) -> str:
    """One line for a history row of `LogWindow.row`."""
    return (
        f"step {row['step']:>6} | loss {row['loss']:.4f} | NMSE {row['nmse']:.4f} | "
        f"perplexity {row['perplexity']:6.1f} | codes used {row['codes_used']:>4} | "
        f"lr {row['learning_rate']:.2e} | {row['images_per_s']:.0f} img/s"
    )
