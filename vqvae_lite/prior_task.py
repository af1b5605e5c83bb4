# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""A prior as a task for chapter 6's loop (the cross-entropy of every code, the test split's
bits per code), with the priors' sizes and training recipes for a CPU and a GPU.

Chapter 8 (`notebooks/08_prior.ipynb`) trains the gated PixelCNN and the transformer with it.
"""

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae_lite.code_dataset import CodeBatches, CodeSplits
from vqvae_lite.devices import resolve_device
from vqvae_lite.likelihood import bits, position_bits
from vqvae_lite.prior_registry import PriorConfig, build_prior
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train_config import TrainConfig

# The priors of the chapter (the cpu sizes) and larger ones for a GPU, by registered name.
PRIOR_MODELS = {
    "cpu": {
        "pixelcnn": PriorConfig("pixelcnn", options=dict(dim=32, layers=6)),
        "transformer": PriorConfig("transformer", options=dict(dim=64, layers=2, heads=4)),
    },
    # The reference priors: larger, and small enough to ship with the package.
    "gpu": {
        "pixelcnn": PriorConfig("pixelcnn", options=dict(dim=64, layers=10)),
        "transformer": PriorConfig("transformer", options=dict(dim=128, layers=4, heads=4)),
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
    # The reference priors' recipe: 6.4 epochs of the 50,000 code grids (the shipped
    # transformer trained four times as long, with --steps 10000).
    "gpu": TrainConfig(
        steps=2500,
        batch_size=128,
        learning_rate=1e-3,
        warmup_steps=200,
        log_every=50,
        eval_every=500,
        checkpoint_every=500,
    ),
}


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
