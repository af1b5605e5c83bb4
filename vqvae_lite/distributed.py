# Generated from notebooks/11_several_gpus.ipynb by tools/export.py: edit the notebook.
"""Training on several processes with DistributedDataParallel: each process takes its share of
every global batch, and the quantiser stays one quantiser for all of them.

Appendix 11 (`notebooks/11_several_gpus.ipynb`) shows what goes wrong without it, checks the
fix on CPU processes joined over gloo, and launches the command line with torchrun. On GPUs the
same code runs over NCCL; the paths that only GPUs take are marked `(GPU only)`.
"""

import contextlib
import inspect
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vqvae_lite import cli
from vqvae_lite.devices import resolve_device
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.loop import fit
from vqvae_lite.metrics import metrics_from_sums, reconstruction_sums
from vqvae_lite.model import ModelConfig
from vqvae_lite.synced_codebook import all_sum, synchronize, world
from vqvae_lite.task import StepOutput
from vqvae_lite.train import TrainResult, VQVAETask
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_scale import ResidentBatches


class ShardedBatches:
    """This process's share of chapter 0's `ResidentBatches` of `processes` x `batch_size`
    images: the same permutation every epoch on every process (the same seed), cut into
    contiguous blocks, block `rank` for this process. Together the processes see exactly the
    batches of one process with the global batch, in the same order."""

    def __init__(self, images, batch_size: int, device, seed: int, rank: int, processes: int):
        self.batches = ResidentBatches(images, batch_size * processes, device, seed=seed)
        self.batch_size, self.rank = batch_size, rank

    @property
    def images(self) -> Tensor:
        return self.batches.images

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def __iter__(self):
        return self

    def __next__(self) -> Tensor:
        batch = next(self.batches)  # (P*B, 3, H, W), the global batch, channels-last
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict:
        return self.batches.state_dict()  # the global order: the same on every process

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


def global_logs(logs: dict[str, Tensor], processes: int) -> dict[str, Tensor]:
    """Chapter 6's logs of one process's block -> the global batch's: the scalar losses
    averaged over the processes, the code counts (K,) added up."""
    scalars = {name: value for name, value in logs.items() if value.dim() == 0}
    means = all_sum(torch.stack([value.float() for value in scalars.values()])) / processes
    return dict(zip(scalars, means, strict=True)) | {"code_counts": all_sum(logs["code_counts"])}


def evaluate_together(model: nn.Module, images: Tensor, data_variance: float) -> dict:
    """Chapter 6's `evaluate` of the whole split, (N, 3, H, W) uint8: each process measures
    the sums behind the metrics on its block of the images, and the sums are added up."""
    rank, processes = world()
    device = next(model.parameters()).device
    part = reconstruction_sums(model, images.tensor_split(processes)[rank])
    errors = [part["squared_error"], part["squared_error_01"], part["values"]]
    errors = all_sum(torch.tensor(errors, dtype=torch.float64, device=device)).cpu()
    sums = dict(zip(["squared_error", "squared_error_01", "values"], errors.tolist(), strict=True))
    sums["code_counts"] = all_sum(part["code_counts"].to(device)).cpu()  # (K,), whole split
    return metrics_from_sums(sums, data_variance)


# DDP's switch for copying rank 0's buffers before every forward: broadcast_buffers, renamed
# forward_sync_buffers in recent torch versions
BUFFERS = next(
    name
    for name in ("forward_sync_buffers", "broadcast_buffers")
    if name in inspect.signature(DistributedDataParallel).parameters
)


class DistributedVQVAETask(VQVAETask):
    """Chapter 6's VQ-VAE task, trained by every process of the group together.

    Each process takes its block of the global batch; DistributedDataParallel averages the
    gradients, `synchronize` keeps the quantiser one quantiser, and DDP's copying of rank 0's
    buffers at every forward is switched off (`broadcast_buffers=False`): it would throw away
    every other process's EMA statistics. The logs and the test metrics are the global batch's
    and the whole split's, the same on every process; only rank 0 prints and saves.
    `sync_codebook=False` and `broadcast_buffers=True` exist to show what goes wrong.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainConfig,
        splits: ImageSplits,
        sync_codebook: bool = True,
        broadcast_buffers: bool = False,
    ):
        super().__init__(model_config, config, splits)
        self.rank, self.processes = world()
        self.main_process = self.rank == 0
        self.device = self.batches.images.device
        self.batches = ShardedBatches(
            splits.train, config.batch_size, self.device, config.seed, self.rank, self.processes
        )
        if sync_codebook:
            synchronize(self.model.quantizer)
        ids = [self.device.index] if self.device.type == "cuda" else None  # (GPU only)
        ddp = DistributedDataParallel(self.model, device_ids=ids, **{BUFFERS: broadcast_buffers})
        self.forward = torch.compile(ddp) if config.compile else ddp
        self.identity = self.identity | {"processes": self.processes}  # the global batch

    def loss(self, x: Tensor) -> StepOutput:
        step = super().loss(x)  # this process's block of the global batch
        logs = global_logs(step.logs, self.processes)
        # the value of the global mean, so that every process sees the same NaN; the gradient
        # of this process's block, which DDP averages into the global batch's
        loss = step.loss + (logs["loss"] - step.loss).detach()
        return StepOutput(loss, logs, step.output)

    def sample_images(self, count: int) -> Tensor:
        """This process's block of chapter 6's sample (the same images in the same order);
        the synced quantiser gathers their encodings into the whole sample's."""
        return super().sample_images(count).tensor_split(self.processes)[self.rank]

    def evaluate(self) -> dict:
        return evaluate_together(self.model, self.test_images, self.data_variance)

    def agree(self, elapsed_s: float, interrupted: bool) -> tuple[float, bool]:
        """The latest clock and any interrupt: every process stops at the same step."""
        both = torch.tensor([elapsed_s, float(interrupted)], dtype=torch.float64)
        both = both.to(self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return both[0].item(), bool(both[1].item())


@contextlib.contextmanager
def process_group(device: torch.device):
    """Join the processes that torchrun started (it sets RANK, WORLD_SIZE, MASTER_ADDR, ...):
    NCCL between GPUs, one GPU per process (the one of LOCAL_RANK), gloo between CPUs."""
    if device.type == "cuda":  # (GPU only)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def train_distributed(
    model_config: ModelConfig,
    train_config: TrainConfig,
    splits: ImageSplits,
    out: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Chapter 6's `train`, with every process that torchrun started training together."""
    device = resolve_device(train_config.device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index not in (None, local):  # (GPU only)
        raise ValueError(
            f"under torchrun each process trains on the GPU of its LOCAL_RANK (cuda:{local}); "
            "pass --device cuda, or no --device"
        )
    with process_group(device):
        task = DistributedVQVAETask(model_config, train_config, splits)
        run = fit(task, train_config, out, resume)
    return TrainResult(
        task.model, run.history, run.test, run.elapsed_s, run.step, task.data_variance
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m vqvae_lite`: appendix 10's command line on one process, exactly as there;
    under torchrun (WORLD_SIZE > 1), on every process it started, with rank 0 printing."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes == 1:
        return cli.main(argv)
    rank = int(os.environ["RANK"])
    with open(os.devnull, "w") as devnull:
        quiet = contextlib.redirect_stdout(devnull) if rank else contextlib.nullcontext()
        with quiet:
            print(f"{processes} processes, each with a batch of the preset's size")
            return cli.main(argv, trainer=train_distributed, processes=processes)
