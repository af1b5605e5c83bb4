"""Runs a function on several CPU processes joined over gloo, and traces a training run: what
the tests of the package's distributed training use on one machine (appendix 11 writes the
same two functions in its own cells)."""

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing

from vqvae_lite.codebook import code_counts
from vqvae_lite.distributed import DistributedVQVAETask
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.loop import fit
from vqvae_lite.model import ModelConfig
from vqvae_lite.quantizer import CodebookQuantizer
from vqvae_lite.synced_codebook import world
from vqvae_lite.task import StepOutput
from vqvae_lite.train import VQVAETask
from vqvae_lite.train_config import TrainConfig


def run_processes(processes: int, function: Callable, *args, timeout_s: float = 600) -> list:
    """`function(*args)` on `processes` new CPU processes joined over gloo, one thread each;
    returns their results in rank order. `function` must be importable. TimeoutError, with
    the processes killed, if they have not all finished within `timeout_s` (a hang)."""
    with tempfile.TemporaryDirectory() as folder:
        context = torch.multiprocessing.start_processes(
            _join_and_run,
            args=(processes, folder, function, args),
            nprocs=processes,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout_s
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"{processes} processes still running after {timeout_s} s")
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
    """Train with `fit` and record, after every step, the codebook (for a quantiser that has
    one) and what this process's own block of the batch used: chapter 6's task on one
    process, else the distributed one."""
    if world()[1] == 1:
        task = VQVAETask(model_config, config, splits)
    else:
        options = dict(sync_codebook=sync_codebook, broadcast_buffers=broadcast_buffers)
        task = DistributedVQVAETask(model_config, config, splits, **options)
    quantizer, codebooks, own_counts, after_step = task.model.quantizer, [], [], task.after_step

    def recording(step: StepOutput) -> dict[str, torch.Tensor]:
        logs = after_step(step)
        if isinstance(quantizer, CodebookQuantizer):
            codebooks.append(quantizer.codebook.detach().clone())  # (K, D)
        own_counts.append(code_counts(step.output.indices, quantizer.num_codes))  # (K,)
        return logs

    task.after_step = recording
    run = fit(task, config)
    return dict(
        codebooks=torch.stack(codebooks) if codebooks else None,  # (steps, K, D)
        own_counts=torch.stack(own_counts),  # (steps, K)
        model=task.model.state_dict(),
        history=run.history,
        test=run.test,
    )
