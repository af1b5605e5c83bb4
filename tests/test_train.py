"""Training (chapter 6): metrics against hand-computed values, the schedule, checkpoints that
round-trip, resumed runs that match uninterrupted ones, unusable checkpoints refused without
overwriting anything, the NaN guard, the time budget, the reusable loop on a model that is not
a VQ-VAE, and the command line (appendix "Training for real")."""

import math
import os
import signal
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vqvae_lite.cli as cli_module
import vqvae_lite.train as train_module
import vqvae_lite.training_flags as training_flags
from vqvae_lite.checkpoint import CHECKPOINT, FORMAT, CheckpointError, load_checkpoint
from vqvae_lite.cli import main
from vqvae_lite.codebook_upkeep import DEFAULT_MODELS
from vqvae_lite.divergence import NonFiniteLossError
from vqvae_lite.image_cache import CACHE_ENV
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.loop import fit
from vqvae_lite.losses import LossTerms
from vqvae_lite.metrics import (
    evaluate,
    evaluation_mode,
    metrics_from_sums,
    psnr,
    reconstruction_sums,
)
from vqvae_lite.model import VQVAE, ModelConfig, VQVAEOutput
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train import PRESETS, VQVAETask, load_model, train
from vqvae_lite.train_config import TrainConfig, learning_rate
from vqvae_lite.training_scale import ResidentBatches, to_training_scale

TINY_MODEL = ModelConfig(hidden=16, residual_hidden=8, residual_layers=1, embedding_dim=8)
TINY_MODEL = replace(TINY_MODEL, num_codes=16)
TINY_RUN = TrainConfig(
    steps=6,
    batch_size=8,
    learning_rate=1e-3,
    warmup_steps=2,
    device="cpu",
    log_every=2,
    checkpoint_every=3,
)


@pytest.fixture(scope="module")
def splits() -> ImageSplits:
    """48 training and 16 test images of 16x16 pixels: smooth random blobs, seeded."""
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(64, 3, 4, 4, generator=generator)
    images = nn.functional.interpolate(low, size=16, mode="bilinear")  # (64, 3, 16, 16)
    images = (images * 255).round().to(torch.uint8)
    labels = torch.zeros(64, dtype=torch.int64)
    return ImageSplits(images[:48], images[48:], labels[:48], labels[48:], ["blob"], "tiny")


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_times(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("elapsed_s", "images_per_s")} for row in history
    ]


# --- metrics ------------------------------------------------------------------------------------


class FixedErrorModel(nn.Module):
    """Reconstructs x as x + 0.1 and picks code 0 for the first half of the images, 1 after."""

    def __init__(self, index_space: int = 4):
        super().__init__()
        self.config = ModelConfig(num_codes=4)
        self.quantizer = SimpleNamespace(num_codes=index_space)  # residual VQ: more than 4
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b = len(x)
        indices = torch.zeros(b, 2, 2, dtype=torch.int64)
        indices[b // 2 :] = 1
        z = torch.zeros(b, 1, 2, 2)
        return VQVAEOutput(x + 0.1, z, z, indices, {})


def test_metrics_match_hand_computed_values():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(1e-4, peak=2.0) == pytest.approx(10 * math.log10(4 / 1e-4))
    images = torch.full((8, 3, 4, 4), 100, dtype=torch.uint8)  # mid-grey: no clamping
    metrics = evaluate(FixedErrorModel(), images, data_variance=0.5, batch_size=4)
    # error 0.1 on [-1, 1] is 0.05 on [0, 1]: MSE 0.01 and 0.0025
    assert metrics["nmse"] == pytest.approx(0.01 / 0.5, rel=1e-5)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / 0.0025), rel=1e-5)
    # per batch of 4 images, 2 pick code 0 and 2 pick code 1: two codes equally used
    assert metrics["perplexity"] == pytest.approx(2.0)
    assert metrics["codes_used"] == 2
    assert metrics["code_counts"].tolist() == [16, 16, 0, 0]


def test_the_metrics_count_the_quantizers_indices_not_the_codebook_size():
    images = torch.full((8, 3, 4, 4), 100, dtype=torch.uint8)
    metrics = evaluate(FixedErrorModel(index_space=6), images, data_variance=0.5, batch_size=4)
    assert metrics["code_counts"].tolist() == [16, 16, 0, 0, 0, 0]


def test_sums_of_parts_of_a_split_give_the_metrics_of_the_whole(splits):
    torch.manual_seed(0)
    model = VQVAE(TINY_MODEL)
    whole = reconstruction_sums(model, splits.test, batch_size=5)
    assert whole["values"] == splits.test.numel() and whole["code_counts"].dtype == torch.int64
    parts = [reconstruction_sums(model, part, batch_size=5) for part in splits.test.split(7)]
    added = {key: sum(part[key] for part in parts) for key in whole}
    assert torch.equal(added["code_counts"], whole["code_counts"])
    assert added["squared_error"] == pytest.approx(whole["squared_error"], rel=1e-6)
    metrics = evaluate(model, splits.test, 0.3, batch_size=5)
    again = metrics_from_sums(whole, 0.3)
    assert torch.equal(again.pop("code_counts"), metrics.pop("code_counts")) and again == metrics
    assert metrics_from_sums(added, 0.3)["nmse"] == pytest.approx(metrics["nmse"], rel=1e-6)


def test_evaluation_mode_gives_the_module_back_in_its_mode_however_the_block_ends():
    module = nn.Sequential(nn.Dropout(0.5))
    for training in (True, False):
        module.train(training)
        with pytest.raises(RuntimeError), evaluation_mode(module):
            assert not module.training and not module[0].training
            raise RuntimeError("the block failed")
        assert module.training == training and module[0].training == training


def test_the_sample_of_training_images_is_one_fixed_draw_that_is_then_encoded(splits):
    task = VQVAETask(TINY_MODEL, TINY_RUN, splits)
    before = torch.get_rng_state()
    images = task.sample_images(20)
    pick = torch.randperm(48, generator=torch.Generator().manual_seed(0))[:20]
    assert images.dtype == torch.uint8 and torch.equal(images, splits.train[pick])
    encodings = task.sample_encodings(20)
    assert torch.equal(torch.get_rng_state(), before)  # no draw from the global generator
    with torch.no_grad():
        z_e = task.model.encode(to_training_scale(images))  # (20, D, h, w)
    assert torch.equal(encodings, z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1]))


def test_evaluation_leaves_the_model_in_training_mode_and_the_ema_codebook_alone(splits):
    result = train(replace(TINY_MODEL, quantizer="ema"), replace(TINY_RUN, steps=2), splits)
    model = result.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, splits.test, result.data_variance)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=110, learning_rate=1.0, warmup_steps=10)
    assert learning_rate(config, 0) == pytest.approx(0.1)
    assert learning_rate(config, 9) == pytest.approx(1.0)
    assert learning_rate(config, 60) == pytest.approx(0.5)  # half way through the cosine
    assert learning_rate(config, 110) == pytest.approx(0.0, abs=1e-12)
    budget = replace(config, time_budget_s=100.0)  # the time spent counts when it is further
    assert learning_rate(budget, 20, elapsed_s=50.0) == pytest.approx(0.5)


# --- training, checkpoints and resume -------------------------------------------------------------


def test_training_logs_and_the_checkpoint_round_trip(splits, tmp_path):
    result = train(TINY_MODEL, TINY_RUN, splits, out=tmp_path)
    assert result.steps == 6 and [row["step"] for row in result.history] == [2, 4, 6]
    for key in ("loss", "nmse", "perplexity", "codes_used", "learning_rate", "images_per_s"):
        assert all(key in row for row in result.history)
    assert {"nmse", "psnr", "perplexity", "codes_used", "code_counts"} <= set(result.test)
    state = load_checkpoint(tmp_path / CHECKPOINT)
    for key in ("identity", "train_config", "model", "optimizer", "step", "torch_rng"):
        assert key in state
    assert state["step"] == 6 and state["identity"]["data_variance"] == result.data_variance
    assert state["batches"]["position"] > 0 and state["optimizer"]["state"]
    model, variance = load_model(tmp_path / CHECKPOINT)
    assert same_weights(model, result.model) and variance == result.data_variance
    assert not model.training
    again = evaluate(model, splits.test, variance)
    assert again["nmse"] == pytest.approx(result.test["nmse"], rel=1e-6)


def interrupt_at_batch(monkeypatch, number: int, how: str):
    """Interrupt training while it fetches batch `number`: a crash, or a Ctrl-C."""
    original = ResidentBatches.__next__
    calls = {"n": 0}

    def fetch(self):
        calls["n"] += 1
        if calls["n"] == number:
            if how == "crash":
                raise RuntimeError("power cut")
            os.kill(os.getpid(), signal.SIGINT)  # handled at the end of this step
        return original(self)

    monkeypatch.setattr(ResidentBatches, "__next__", fetch)


@pytest.mark.parametrize(
    "model_config, run_config, how",
    [
        (TINY_MODEL, TINY_RUN, "crash"),
        (TINY_MODEL, TINY_RUN, "ctrl-c"),
        (
            replace(
                TINY_MODEL,
                quantizer="ema",
                quantizer_options={"restart_dead_after": 2, "kmeans_init": True},
            ),
            replace(TINY_RUN, batch_size=4),
            "crash",
        ),
    ],
    ids=["crash", "ctrl-c", "ema-restarts-kmeans"],
)
def test_an_interrupted_then_resumed_run_matches_an_uninterrupted_one(
    splits, tmp_path, monkeypatch, model_config, run_config, how
):
    whole = train(model_config, run_config, splits, out=tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_at_batch(patch, 5, how)
        expected = RuntimeError if how == "crash" else KeyboardInterrupt
        with pytest.raises(expected):
            train(model_config, run_config, splits, out=tmp_path / "cut")
    saved = load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    assert saved["step"] == (3 if how == "crash" else 5)  # last periodic one, or at Ctrl-C
    resumed = train(model_config, run_config, splits, out=tmp_path / "cut", resume=True)
    assert resumed.steps == whole.steps == run_config.steps
    assert same_weights(resumed.model, whole.model)
    assert without_times(resumed.history) == without_times(whole.history)
    assert resumed.test["nmse"] == whole.test["nmse"]
    a = load_checkpoint(tmp_path / "whole" / CHECKPOINT)["optimizer"]["state"]
    b = load_checkpoint(tmp_path / "cut" / CHECKPOINT)["optimizer"]["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)


def test_a_new_run_refuses_to_overwrite_a_checkpoint(splits, tmp_path):
    train(TINY_MODEL, replace(TINY_RUN, steps=2), splits, out=tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        train(TINY_MODEL, replace(TINY_RUN, steps=2), splits, out=tmp_path)


@pytest.fixture
def finished_run(splits, tmp_path):
    """A checkpoint of a finished tiny run, and its bytes."""
    train(TINY_MODEL, replace(TINY_RUN, steps=3), splits, out=tmp_path)
    return tmp_path / CHECKPOINT, (tmp_path / CHECKPOINT).read_bytes()


def refused_without_writing(path, original, splits, model_config, run_config, match):
    files = sorted(path.parent.iterdir())
    with pytest.raises(CheckpointError, match=match):
        train(model_config, run_config, splits, out=path.parent, resume=True)
    assert sorted(path.parent.iterdir()) == files  # nothing new, nothing removed
    return path.read_bytes()


def test_truncated_and_corrupt_checkpoints_are_refused_and_kept(finished_run, splits):
    path, original = finished_run
    for damaged in (original[: len(original) // 2], b"not a checkpoint at all"):
        path.write_bytes(damaged)
        after = refused_without_writing(path, original, splits, TINY_MODEL, TINY_RUN, "corrupt")
        assert after == damaged


def test_mismatched_checkpoints_are_refused_and_kept(finished_run, splits):
    path, original = finished_run
    cases = [
        (replace(TINY_MODEL, num_codes=32), TINY_RUN, "num_codes: 16 -> 32"),
        (TINY_MODEL, replace(TINY_RUN, learning_rate=0.1), "learning_rate"),
    ]
    for model_config, run_config, match in cases:
        after = refused_without_writing(path, original, splits, model_config, run_config, match)
        assert after == original
    other = replace(splits, train=255 - splits.train)  # other images: another variance
    assert refused_without_writing(path, original, other, TINY_MODEL, TINY_RUN, "other") == original


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


class Payload:
    """Arbitrary pickled code: weights_only loading must refuse to run it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    torch.save({"format": FORMAT, "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    splits, tmp_path, monkeypatch
):
    original = train_module.vqvae_loss
    calls = {"n": 0}

    def loss_that_breaks_at_step_5(*args, **kwargs):
        calls["n"] += 1
        terms = original(*args, **kwargs)
        if calls["n"] == 5:
            nan = terms.total * float("nan")
            terms = LossTerms(nan, terms.reconstruction, terms.quantizer)
        return terms

    monkeypatch.setattr(train_module, "vqvae_loss", loss_that_breaks_at_step_5)
    with pytest.raises(NonFiniteLossError, match=r"nan at step 5.*checkpoint \(step 3\)"):
        train(TINY_MODEL, TINY_RUN, splits, out=tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_the_time_budget_stops_training(splits):
    result = train(TINY_MODEL, replace(TINY_RUN, time_budget_s=1e-9), splits)
    assert result.steps == 1 and len(result.history) == 1


# --- command line --------------------------------------------------------------------------------


def test_command_line_trains_resumes_and_reports_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, count in (("train", 128), ("test", 8)):
        (tmp_path / "images" / split / "blob").mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / split / "blob" / f"{i}.png")
    common = ["--preset", "cpu", "--data", str(tmp_path / "images"), "--device", "cpu"]
    common += ["--out", str(tmp_path / "run")]
    assert main([*common, "--steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "trained 1 steps" in printed and "test (8 images): NMSE" in printed
    assert main([*common, "--steps", "2"]) == 1  # would overwrite: refused
    assert "resume" in capsys.readouterr().err
    assert main([*common, "--steps", "2", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 2
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "quantizer", "options", "changes"),
    [
        ([], "ema", {"restart_dead_after": 20}, {}),
        (["--quantizer", "vq", "--time-budget", "0"], "vq", {}, {"time_budget_s": None}),
        (
            ["--kmeans-init", "--time-budget", "0"],
            "ema",
            {"restart_dead_after": 20, "kmeans_init": True},
            {"time_budget_s": None},
        ),
        (
            ["--no-kmeans-init", "--restart-dead-after", "7", "--time-budget", "60"],
            "ema",
            {"kmeans_init": False, "restart_dead_after": 7},
            {"time_budget_s": 60.0},
        ),
        (
            ["--quantizer", "vq-upkeep", "--restart-dead-after", "5"],
            "vq-upkeep",
            {"restart_dead_after": 5},
            {},
        ),
    ],
    ids=["preset", "plain-vq", "kmeans-no-time-limit", "explicit", "gradient-restarts"],
)
def test_command_line_flags_choose_the_quantizer_and_its_options(
    flags, quantizer, options, changes, splits, monkeypatch
):
    chosen = {}

    def record_and_stop(model_config, config, splits, out, resume):
        chosen.update(model=model_config, run=config)
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(training_flags, "load_cifar10", lambda data, **kwargs: splits)
    monkeypatch.setattr(cli_module, "train", record_and_stop)
    assert main(["--preset", "cpu", "--device", "cpu", "--batch-size", "8", *flags]) == 130
    assert chosen["model"].quantizer == quantizer
    assert chosen["model"].quantizer_options == options
    assert DEFAULT_MODELS["cpu"].quantizer_options == {"restart_dead_after": 20}  # untouched
    expected = replace(PRESETS["cpu"], device="cpu", print_logs=True, batch_size=8, **changes)
    assert chosen["run"] == expected


@pytest.mark.parametrize(
    "flags", [["--steps", "0"], ["--restart-dead-after", "-1"], ["--time-budget", "-5"]]
)
def test_command_line_refuses_negative_settings(flags, capsys):
    with pytest.raises(SystemExit) as stop:
        main(flags)
    assert stop.value.code == 2
    assert f"{flags[0]} must be at least" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line_and_loads_each_module_once():
    module = "vqvae_lite.__main__"
    command = [sys.executable, "-X", "importtime", "-W", "error", "-m", "vqvae_lite", "--help"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "--restart-dead-after" in finished.stdout and "--quantizer" in finished.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in finished.stderr.splitlines()]
    assert module not in imported, f"{module} ran as __main__ and was imported a second time"


def test_periodic_evaluations_are_attached_to_their_log_rows(splits):
    result = train(TINY_MODEL, replace(TINY_RUN, eval_every=3), splits)
    assert [row["step"] for row in result.history] == [2, 3, 4, 6]
    assert [("test" in row) for row in result.history] == [False, True, False, False]
    assert {"nmse", "psnr", "perplexity", "codes_used"} == set(result.history[1]["test"])


class Line(Task):
    """Not a VQ-VAE: one linear layer fitted to y = 3x - 1 on fixed inputs."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.inputs = torch.linspace(-1, 1, 32).view(32, 1, 1, 1)
        self.batches = ResidentBatches(torch.zeros(32, 1, 1, 1, dtype=torch.uint8), 8)
        self.identity = {"task": "line"}
        self.evaluations = 0

    def loss(self, batch):
        x = self.inputs[self.batches.order[self.batches.position - 8 : self.batches.position]]
        loss = (self.model(x.view(-1, 1)) - (3 * x.view(-1, 1) - 1)).square().mean()
        return StepOutput(loss, {"loss": loss})

    def evaluate(self):
        self.evaluations += 1
        return {"weight": self.model.weight.item()}


def test_the_loop_trains_a_model_that_is_not_a_vqvae_and_resumes_it(tmp_path, monkeypatch):
    config = TrainConfig(
        steps=120,
        learning_rate=0.1,
        warmup_steps=5,
        log_every=40,
        checkpoint_every=60,
        device="cpu",
    )
    whole = fit(Line(), config, out=tmp_path / "whole")
    assert abs(whole.task.model.weight.item() - 3) < 0.05
    assert [row["step"] for row in whole.history] == [40, 80, 120]
    assert whole.test == {"weight": whole.task.model.weight.item()}
    with monkeypatch.context() as patch:
        interrupt_at_batch(patch, 70, "crash")
        with pytest.raises(RuntimeError):
            fit(Line(), config, out=tmp_path / "cut")
    resumed = fit(Line(), config, out=tmp_path / "cut", resume=True)
    assert same_weights(resumed.task.model, whole.task.model)
    assert without_times(resumed.history) == without_times(whole.history)
    with pytest.raises(CheckpointError, match="task: 'line' -> 'other'"):
        other = Line()
        other.identity = {"task": "other"}
        fit(other, config, out=tmp_path / "cut", resume=True)
