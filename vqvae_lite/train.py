# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Training the VQ-VAE: its task for the loop of `vqvae_lite.loop`, the presets, `train`, and
loading a trained model back.

Chapter 6 (`notebooks/06_training.ipynb`) trains the VQ-VAE on CIFAR-10 with it. From a
terminal: `python -m vqvae_lite --preset cpu` (the command line is `vqvae_lite.cli`).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from vqvae_lite.checkpoint import CheckpointError, load_checkpoint
from vqvae_lite.codebook import code_counts, perplexity_of_counts
from vqvae_lite.devices import resolve_device
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.loop import fit
from vqvae_lite.losses import vqvae_loss
from vqvae_lite.metrics import evaluate
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_scale import ResidentBatches, to_training_scale, training_variance

PRESETS = {
    # Budget recipe: recognisable reconstructions within 10 minutes on a 2-core CPU.
    "cpu": TrainConfig(
        steps=1500,
        batch_size=128,
        learning_rate=2e-3,
        warmup_steps=30,
        log_every=25,
        checkpoint_every=250,
        time_budget_s=540.0,
    ),
    # Full CIFAR-10 recipe: test NMSE <= 0.056 (the Sonnet example after 10,000 updates).
    "gpu": TrainConfig(
        steps=4000,
        batch_size=128,
        learning_rate=1.5e-3,
        warmup_steps=100,
        log_every=50,
        eval_every=1000,
        checkpoint_every=1000,
    ),
}


class VQVAETask(Task):
    """The VQ-VAE for the loop: seeded model, resident images, chapter 4's loss, code usage."""

    def __init__(self, model_config: ModelConfig, config: TrainConfig, splits: ImageSplits):
        device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.model = VQVAE(model_config).to(device, memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.batches = ResidentBatches(splits.train, config.batch_size, device, seed=config.seed)
        self.data_variance = training_variance(splits.train)
        self.test_images = splits.test
        self.identity = {"model_config": asdict(model_config), "data_variance": self.data_variance}

    def loss(self, x: Tensor) -> StepOutput:
        output = self.forward(x)  # (B, 3, 32, 32) -> VQVAEOutput
        terms = vqvae_loss(output.x_hat, x, output.losses, self.data_variance)
        counts = code_counts(output.indices, self.model.quantizer.num_codes)  # (K,)
        logs = {"loss": terms.total, "nmse": terms.reconstruction, **terms.quantizer}
        return StepOutput(terms.total, logs | {"code_counts": counts}, output)

    def start(self) -> None:
        self.model.quantizer.initialize(self.sample_encodings)

    def sample_images(self, count: int) -> Tensor:
        """`count` training images, (count, 3, H, W) uint8, drawn at random with a generator
        of its own: the same images in every run, and no draw from the global generator."""
        images = self.batches.images
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
        return images[pick.to(images.device)]

    @torch.no_grad()
    def sample_encodings(self, count: int = 2048) -> Tensor:
        """Encoder outputs (count*h*w, D) of the `count` images of `sample_images`."""
        x = to_training_scale(self.sample_images(count))
        z_e = torch.cat([self.model.encode(part) for part in x.split(512)])  # (count, D, h, w)
        return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])  # -> (count*h*w, D)

    def after_step(self, step: StepOutput) -> dict[str, Tensor]:
        output = step.output
        moved = self.model.quantizer.upkeep(output.z_e.detach(), output.indices)
        return {"restarted": torch.tensor(moved)}

    def summarize(self, sums: dict[str, Tensor], steps: int) -> dict[str, float]:
        """Means of the losses; perplexity and codes used over all the window's indices."""
        sums = dict(sums)
        counts, restarted = sums.pop("code_counts"), int(sums.pop("restarted"))  # counts: (K,)
        row = super().summarize(sums, steps)
        return row | dict(
            perplexity=perplexity_of_counts(counts),
            codes_used=int((counts > 0).sum()),
            restarted=restarted,
        )

    def evaluate(self) -> dict:
        return evaluate(self.model, self.test_images, self.data_variance)


@dataclass
class TrainResult:
    """What `train` returns."""

    model: VQVAE
    history: list[dict]  # one row per log step: step, loss, nmse, perplexity, codes_used, ...
    test: dict  # `evaluate` on the test split after the last step
    wall_time_s: float  # training time, summed over resumed sessions
    steps: int  # steps done (fewer than asked when the time budget ran out)
    data_variance: float  # pixel variance of the training split, on the training scale


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    splits: ImageSplits,
    out: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a VQ-VAE on `splits.train`, evaluate it on `splits.test`, checkpoint into `out`.

    With `resume=True` the run continues from `out/checkpoint.pt` exactly where it stopped.
    A missing, corrupt or mismatched checkpoint raises CheckpointError before anything is written.
    """
    task = VQVAETask(model_config, train_config, splits)
    run = fit(task, train_config, out, resume)
    return TrainResult(
        task.model, run.history, run.test, run.elapsed_s, run.step, task.data_variance
    )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VQVAE, float]:
    """The trained model of a checkpoint (eval mode, channels-last) and its data variance."""
    state = load_checkpoint(path)
    identity = state["identity"]
    if "model_config" not in identity:
        raise CheckpointError(f"{path} holds no VQ-VAE (its identity: {sorted(identity)})")
    model = VQVAE(ModelConfig(**identity["model_config"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit its own model config: {error}") from error
    model = model.to(device, memory_format=torch.channels_last).eval()
    return model, identity["data_variance"]
