# Generated from notebooks/11_several_gpus.ipynb by tools/export.py: edit the notebook.
"""Training on several processes with DistributedDataParallel: each process takes its share of
every global batch, and the EMA codebook stays one codebook for all of them.

Appendix 11 (`notebooks/11_several_gpus.ipynb`) shows what goes wrong without it, checks the
fix on CPU processes joined over gloo, and launches the command line with torchrun. On GPUs the
same code runs over NCCL; the paths that only GPUs take are marked `(GPU only)`.
"""

import contextlib
import inspect
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vqvae_lite import cli
from vqvae_lite.checkpoint import CheckpointError, load_checkpoint
from vqvae_lite.codebook import code_counts, codes_used, perplexity
from vqvae_lite.data import ImageSplits, ResidentBatches, to_training_scale
from vqvae_lite.loop import CHECKPOINT, StepOutput, TrainConfig, fit, resolve_device
from vqvae_lite.metrics import evaluate, psnr
from vqvae_lite.model import ModelConfig
from vqvae_lite.quantizer import Quantizer
from vqvae_lite.train import TrainResult, VQVAETask


def world() -> tuple[int, int]:
    """(rank, processes) of this process: (0, 1) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(x: Tensor) -> Tensor:
    """x summed over every process: every process gets the same bits (a new tensor)."""
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def gather_rows(x: Tensor) -> Tensor:
    """Every process's rows (n_r, ...) one after the other in rank order: (sum of n_r, ...)."""
    _, processes = world()
    size = torch.tensor(len(x), device=x.device)
    sizes = [torch.empty_like(size) for _ in range(processes)]
    dist.all_gather(sizes, size)
    padded = x.new_zeros(int(max(sizes)), *x.shape[1:])  # all_gather needs equal shapes
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(processes)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes, strict=True)])


class SyncedCodebook:
    """Makes a codebook quantiser one codebook over every process (a mixin that `synchronize`
    puts in front of its class). What each process would decide from its own batch, it decides
    from the global batch, so that every process makes the same decision:

    - EMA statistics: this batch's counts n_k and sums are summed over the processes before
      the update of chapter 7, so the averages see the global batch;
    - upkeep: the dead-code counters and the restarts run on every process's codes and
      encodings, gathered in rank order, with the same restart generator everywhere;
    - k-means initialisation: on every process's sample, gathered; then rank 0's codebook is
      broadcast, so the bits agree even where a GPU's sums are not deterministic.
    """

    def batch_statistics(self, flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        counts, sums = super().batch_statistics(flat, indices)  # this process's batch
        both = all_sum(torch.cat([counts.unsqueeze(1), sums], dim=1))  # (K, 1 + D), global
        return both[:, 0], both[:, 1:]

    def upkeep(self, z_e: Tensor, indices: Tensor) -> int:
        return super().upkeep(gather_rows(z_e), gather_rows(indices))  # (P*B, D, h, w)

    def initialize(self, sample: Callable[[], Tensor]) -> None:
        super().initialize(lambda: gather_rows(sample()))  # (N, D) from every process
        for tensor in [*self.parameters(), *self.buffers()]:
            dist.broadcast(tensor.data, src=0)


@cache
def synced_class(cls: type) -> type:
    """`cls` with `SyncedCodebook` in front: the same state, the same checkpoint keys."""
    return type(f"Synced{cls.__name__}", (SyncedCodebook, cls), {})


def synchronize(quantizer: Quantizer) -> Quantizer:
    """Make `quantizer` one codebook over every process of the group, in place."""
    quantizer.__class__ = synced_class(type(quantizer))
    return quantizer


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
    its block of the images, and the sums behind the metrics are added up."""
    rank, processes = world()
    device = next(model.parameters()).device
    block = images.tensor_split(processes)[rank]
    part = evaluate(model, block, data_variance)
    pixels = block.numel()
    squared_01 = 10 ** (-part["psnr"] / 10) * pixels  # psnr() undone: the sum of errors^2
    sums = torch.tensor([part["nmse"] * pixels, squared_01, pixels], dtype=torch.float64)
    sums = all_sum(sums.to(device)).cpu()
    counts = all_sum(part["code_counts"].to(device)).cpu()  # (K,) of the whole split
    num_codes = len(counts)
    codes = torch.arange(num_codes).repeat_interleave(counts)  # the split's indices, sorted
    return {
        "nmse": (sums[0] / sums[2]).item(),
        "psnr": psnr((sums[1] / sums[2]).item()),
        "perplexity": perplexity(codes, num_codes),
        "codes_used": codes_used(codes, num_codes),
        "code_counts": counts,
    }


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
    gradients, `SyncedCodebook` keeps the codebook one codebook, and DDP's copying of rank 0's
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

    @torch.no_grad()
    def sample_encodings(self, count: int = 2048) -> Tensor:
        """This process's block of chapter 6's sample (the same images in the same order);
        the synced quantiser gathers the blocks into the whole sample."""
        images = self.batches.images
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
        pick = pick.tensor_split(self.processes)[self.rank]
        x = to_training_scale(images[pick.to(images.device)])
        z_e = torch.cat([self.model.encode(part) for part in x.split(512)])  # (n, D, h, w)
        return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])  # -> (n*h*w, D)

    def evaluate(self) -> dict:
        return evaluate_together(self.model, self.test_images, self.data_variance)

    def agree(self, elapsed_s: float, interrupted: bool) -> tuple[float, bool]:
        """The latest clock and any interrupt: every process stops at the same step."""
        both = torch.tensor([elapsed_s, float(interrupted)], dtype=torch.float64)
        both = both.to(self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return both[0].item(), bool(both[1].item())


def run_processes(processes: int, function: Callable, *args) -> list:
    """`function(*args)` on `processes` new CPU processes joined over gloo, one thread each;
    returns their results in rank order. For checks on one machine: torchrun does the same
    for the command line, on GPUs too. `function` must be importable (not a notebook's)."""
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(
            _join_and_run, args=(processes, folder, function, args), nprocs=processes
        )
        return [torch.load(Path(folder) / f"{rank}.pt") for rank in range(processes)]


def _join_and_run(rank: int, processes: int, folder: str, function: Callable, args) -> None:
    torch.set_num_threads(1)
    rendezvous = f"file://{Path(folder) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=processes)
    try:
        result = function(*args)
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(folder) / f"{rank}.pt")


def trace_training(
    model_config: ModelConfig,
    config: TrainConfig,
    splits: ImageSplits,
    sync_codebook: bool = True,
    broadcast_buffers: bool = False,
) -> dict:
    """Train with `fit` and record the codebook after every step, and what this process's own
    block of each batch used: chapter 6's task on one process, else the distributed one."""
    if world()[1] == 1:
        task = VQVAETask(model_config, config, splits)
    else:
        options = dict(sync_codebook=sync_codebook, broadcast_buffers=broadcast_buffers)
        task = DistributedVQVAETask(model_config, config, splits, **options)
    codebooks, own_counts, after_step = [], [], task.after_step

    def recording(step: StepOutput) -> dict[str, Tensor]:
        logs = after_step(step)
        codebooks.append(task.model.quantizer.codebook.detach().clone())  # (K, D)
        own_counts.append(code_counts(step.output.indices, model_config.num_codes))  # (K,)
        return logs

    task.after_step = recording
    run = fit(task, config)
    return dict(
        codebooks=torch.stack(codebooks),  # (steps, K, D)
        own_counts=torch.stack(own_counts),  # (steps, K)
        model=task.model.state_dict(),
        history=run.history,
        test=run.test,
    )


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


def check_processes(out: str | Path | None, resume: bool, processes: int) -> None:
    """CheckpointError if the run to resume was trained by another number of processes."""
    path = None if out is None else Path(out) / CHECKPOINT
    if not resume or path is None or not path.is_file():
        return  # `fit` reports a missing checkpoint
    saved = load_checkpoint(path)["identity"].get("processes", 1)
    if saved != processes:
        raise CheckpointError(
            f"{path} was trained by {saved} process(es), each with its own batch; resume it "
            f"with {saved} (torchrun --nproc_per_node {saved}): {processes} would change the "
            "global batch, and with it the run"
        )


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
    check_processes(out, resume, int(os.environ["WORLD_SIZE"]))
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
