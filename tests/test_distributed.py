"""Training on several processes (appendix 11): two CPU processes over gloo, each with half the
batch, train the same model and the same codebook as one process with the whole batch; without
the all-reduce, or with DDP's default buffer copying, they do not."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from distributed_harness import run_processes, trace_training
from PIL import Image

from vqvae_lite.checkpoint import CHECKPOINT, LOCK, load_checkpoint
from vqvae_lite.distributed import BUFFERS, DistributedVQVAETask, ShardedBatches
from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.model import ModelConfig
from vqvae_lite.quantizer import registered_quantizers
from vqvae_lite.synced_codebook import gather_rows, world
from vqvae_lite.train import VQVAETask
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_scale import ResidentBatches

ROOT = Path(__file__).resolve().parent.parent
STEPS = 6
TOLERANCE = 1e-5  # float32 sums in another order; the differences measured are below 1e-6
EMA = ModelConfig(hidden=16, residual_hidden=8, embedding_dim=8, num_codes=32, quantizer="ema")
RESTARTS = replace(EMA, quantizer_options={"restart_dead_after": 2, "kmeans_init": True})


def blocky_images(count: int, seed: int) -> torch.Tensor:
    """(count, 3, 16, 16) uint8 images of 4x4 random colour blocks."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (count, 3, 4, 4), generator=generator, dtype=torch.uint8)
    return x.repeat_interleave(4, 2).repeat_interleave(4, 3).contiguous()


SPLITS = ImageSplits(
    blocky_images(256, 0),
    blocky_images(48, 1),
    torch.zeros(256, dtype=torch.int64),
    torch.zeros(48, dtype=torch.int64),
    ["blocks"],
    source="synthetic",
)


def config(batch_size: int) -> TrainConfig:
    return TrainConfig(
        steps=STEPS,
        batch_size=batch_size,
        warmup_steps=0,
        log_every=1,
        checkpoint_every=1000,
        device="cpu",
        amp=False,
    )


SCENARIOS = {  # name: (model, sync_codebook, broadcast_buffers)
    "synced": (EMA, True, False),
    "synced, k-means and restarts": (RESTARTS, True, False),
    "synced, DDP's buffer copy": (EMA, True, True),
    "no all-reduce": (EMA, False, False),
    "no all-reduce, DDP's buffer copy": (EMA, False, True),
}


def every_quantizer() -> dict[str, ModelConfig]:
    """Every registered quantiser with its own defaults on the tiny model, and residual VQ with
    restarts that fire, so that its nested codebooks' upkeep runs too."""
    tiny = dict(hidden=16, residual_hidden=8, embedding_dim=8)
    models = {name: ModelConfig(**tiny, quantizer=name) for name in registered_quantizers()}
    options = {"restart_dead_after": 2, "stages": 2}
    models["rvq, restarts"] = ModelConfig(
        **tiny, num_codes=16, quantizer="rvq", quantizer_options=options
    )
    return models


def every_scenario() -> dict:
    """In each of the two processes: every scenario, every quantiser, and a few facts about
    the group."""
    results = {
        name: trace_training(model, config(64), SPLITS, sync, broadcast)
        for name, (model, sync, broadcast) in SCENARIOS.items()
    }
    results["quantizers"] = {
        name: trace_training(model, replace(config(64), steps=3), SPLITS)
        for name, model in every_quantizer().items()
    }
    rank, _ = world()
    results["gathered"] = gather_rows(torch.full((rank + 1, 2), rank))  # unequal blocks
    task = DistributedVQVAETask(EMA, config(64), SPLITS)
    results["buffer copy"] = getattr(task.forward, BUFFERS)
    results["first batch"] = next(task.batches)
    return results


@pytest.fixture(scope="module")
def two():
    return run_processes(2, every_scenario, timeout_s=300)


@pytest.fixture(scope="module")
def one():
    torch.set_num_threads(1)
    return {
        name: trace_training(model, config(128), SPLITS)
        for name, (model, _, _) in SCENARIOS.items()
    }


def largest_difference(a: dict, b: dict) -> float:
    tensors = [k for k in a if torch.is_tensor(a[k])]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in tensors)


@pytest.mark.parametrize(
    "name", ["synced", "synced, k-means and restarts", "synced, DDP's buffer copy"]
)
def test_two_processes_train_what_one_process_with_twice_the_batch_trains(two, one, name):
    for rank in (0, 1):
        drift = (two[rank][name]["codebooks"] - one[name]["codebooks"]).abs().max()
        assert drift < TOLERANCE, f"rank {rank}: the codebook is {drift} away"
        assert largest_difference(two[rank][name]["model"], one[name]["model"]) < TOLERANCE
        losses = [row["loss"] for row in two[rank][name]["history"]]
        assert losses == pytest.approx([row["loss"] for row in one[name]["history"]], rel=1e-5)


def test_restarts_fire_and_agree_with_one_process(two, one):
    name = "synced, k-means and restarts"
    restarted = [row["restarted"] for row in one[name]["history"]]
    assert sum(restarted) > 0, "no code was restarted: the check would prove nothing"
    for rank in (0, 1):
        assert [row["restarted"] for row in two[rank][name]["history"]] == restarted


@pytest.mark.parametrize("name", ["synced", "synced, k-means and restarts"])
def test_every_process_holds_the_same_codebook_after_every_step(two, name):
    assert torch.equal(two[0][name]["codebooks"], two[1][name]["codebooks"])
    assert largest_difference(two[0][name]["model"], two[1][name]["model"]) == 0


@pytest.mark.parametrize("name", list(every_quantizer()))
def test_every_quantizer_ends_in_the_same_state_on_every_process(two, name):
    """Every registered quantiser trains on two processes, the run ends, and both processes
    hold the same weights and buffers, nested codebooks included, bit for bit."""
    first, second = (two[rank]["quantizers"][name] for rank in (0, 1))
    assert len(first["history"]) == 3 and first["test"]["codes_used"] >= 1
    assert first["model"].keys() == second["model"].keys()
    for key, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][key]), f"{name}: {key} differs"


def test_residual_vq_restarts_its_nested_codebooks_on_every_process(two):
    restarted = [row["restarted"] for row in two[0]["quantizers"]["rvq, restarts"]["history"]]
    assert sum(restarted) > 0, "no code was restarted: the check would prove nothing"
    assert [row["restarted"] for row in two[1]["quantizers"]["rvq, restarts"]["history"]] == (
        restarted
    )


def test_the_test_metrics_are_the_whole_splits_on_every_process(two, one):
    for rank in (0, 1):
        test, expected = two[rank]["synced"]["test"], one["synced"]["test"]
        assert torch.equal(test["code_counts"], expected["code_counts"])
        assert test["codes_used"] == expected["codes_used"]
        for metric in ("nmse", "psnr", "perplexity"):
            assert test[metric] == pytest.approx(expected[metric], rel=1e-5)
    first, second = (two[rank]["synced"]["test"] for rank in (0, 1))
    assert torch.equal(first["code_counts"], second["code_counts"])
    assert {k: first[k] for k in ("nmse", "psnr", "perplexity", "codes_used")} == {
        k: second[k] for k in ("nmse", "psnr", "perplexity", "codes_used")
    }


def test_without_the_all_reduce_the_codebooks_drift_apart(two, one):
    name = "no all-reduce"
    apart = (two[0][name]["codebooks"] - two[1][name]["codebooks"]).abs().amax(dim=(1, 2))
    assert (apart > 1e-3).all(), f"the processes' codebooks differ by only {apart}"
    assert (two[0][name]["codebooks"][-1] - one["synced"]["codebooks"][-1]).abs().max() > 1e-3


def test_ddp_copying_rank_0s_buffers_hides_the_drift_but_not_the_loss_of_data(two, one):
    name = "no all-reduce, DDP's buffer copy"
    for rank in (0, 1):  # both end near rank 0's codebook, far from the global batch's
        final = two[rank][name]["codebooks"][-1]
        assert (final - one["synced"]["codebooks"][-1]).abs().max() > 1e-3
    assert two[0]["buffer copy"] is False, "DDP copies rank 0's buffers over the others'"


def test_the_processes_share_every_global_batch_in_order(two):
    expected = next(ResidentBatches(SPLITS.train, 128, seed=0))  # one process, twice the batch
    assert torch.equal(torch.cat([two[0]["first batch"], two[1]["first batch"]]), expected)


def test_gather_rows_takes_blocks_of_any_size_in_rank_order(two):
    expected = torch.tensor([[0, 0], [1, 1], [1, 1]])
    assert torch.equal(two[0]["gathered"], expected)
    assert torch.equal(two[1]["gathered"], expected)


def test_sharded_batches_follow_the_global_order_across_epochs_and_resume():
    whole = ResidentBatches(SPLITS.train, 96, seed=3)
    shards = [ShardedBatches(SPLITS.train, 32, "cpu", 3, rank, 3) for rank in range(3)]
    for _ in range(5):  # 256 images: the third batch starts a new epoch
        assert torch.equal(torch.cat([next(s) for s in shards]), next(whole))
    state = shards[1].state_dict()
    resumed = ShardedBatches(SPLITS.train, 32, "cpu", 0, 1, 3)
    resumed.load_state_dict(state)
    assert torch.equal(next(resumed), next(shards[1]))
    assert resumed.epoch == shards[1].epoch == whole.epoch


def test_one_process_makes_no_distributed_call(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a torch.distributed call in a single-process run")

    for name in ("all_reduce", "all_gather", "broadcast", "init_process_group"):
        monkeypatch.setattr(dist, name, refuse)
    torch.set_num_threads(1)
    trace = trace_training(RESTARTS, replace(config(128), steps=3), SPLITS)
    assert trace["codebooks"].shape == (3, 32, 8)
    task = VQVAETask(RESTARTS, config(128), SPLITS)
    assert type(task.model.quantizer).__name__ == "EMAQuantizerWithUpkeep"
    assert isinstance(task.model.quantizer, EMAVectorQuantizer)


def image_folder(root: Path, train: int, test: int) -> Path:
    """A folder of tiny PNG images in train/<class>/ and test/<class>/."""
    for split, count in (("train", train), ("test", test)):
        folder = root / "images" / split / "blocks"
        folder.mkdir(parents=True)
        pixels = blocky_images(count, seed=len(split)).repeat(1, 1, 2, 2)  # (N, 3, 32, 32)
        for i, image in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{i}.png")
    return root / "images"


def test_the_command_line_under_torchrun(tmp_path):
    """Two processes from the unchanged command; a resume with two works; with one or three
    it is refused with the number of processes that trained the run."""
    data = image_folder(tmp_path, train=256, test=16)
    environment = os.environ | {
        "VQVAE_LITE_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        "-m",
        "vqvae_lite",
        "--preset",
        "cpu",
        "--device",
        "cpu",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
    ]

    def torchrun(processes: int, *flags: str) -> subprocess.CompletedProcess:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
        ]
        return subprocess.run(
            launcher + command + list(flags),
            capture_output=True,
            text=True,
            env=environment,
            cwd=tmp_path,
            timeout=600,
        )

    first = torchrun(2, "--steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("trained 2 steps (512 images)") == 1, first.stdout
    # rank 0 alone writes: one checkpoint, beside the lock file that claimed the folder
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == sorted([CHECKPOINT, LOCK])
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["identity"]["processes"] == 2
    resumed = torchrun(2, "--steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 3
    refused = torchrun(3, "--steps", "4", "--resume")
    assert refused.returncode != 0
    assert "trained by 2 process(es)" in refused.stderr
    alone = subprocess.run(
        [sys.executable, *command, "--steps", "4", "--resume"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    assert alone.returncode == 1, alone.stderr
    assert "trained by 2 process(es)" in alone.stderr, alone.stderr
    assert "torchrun --nproc_per_node 2" in alone.stderr, alone.stderr
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 3
