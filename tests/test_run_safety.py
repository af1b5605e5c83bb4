"""Runs that are never lost (appendix "Training for real", chapter 6's loop): the `out` folder
checked and locked before the first step, SIGTERM and Ctrl-C saving the run, a second signal
saying what was kept, checksummed checkpoints, leftover partial files removed, divergence
reported wherever it shows first; the command line's one-line errors; and a trained model on
an image file. Signal and lock tests run real processes."""

import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vqvae_lite.cli as cli_module
import vqvae_lite.training_flags as training_flags
from vqvae_lite.checkpoint import (
    CHECKPOINT,
    LOCK,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from vqvae_lite.cli import main
from vqvae_lite.divergence import NonFiniteLossError
from vqvae_lite.image_cache import CACHE_ENV
from vqvae_lite.image_folder import DataError, ImageSplits
from vqvae_lite.images import decode_codes, encode_image, load_image, reconstruct
from vqvae_lite.interrupts import TrainingInterrupted
from vqvae_lite.loop import fit
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train import train
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_scale import ResidentBatches

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ModelConfig(hidden=16, residual_hidden=8, residual_layers=1, embedding_dim=8)
TINY_MODEL = replace(TINY_MODEL, num_codes=16)
TINY_RUN = TrainConfig(
    steps=6, batch_size=8, learning_rate=1e-3, warmup_steps=2, device="cpu", log_every=2,
    checkpoint_every=3,
)  # fmt: skip


class Line(Task):
    """Fit y = 3x - 1 with one linear layer; counts the losses it computes."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.batches = ResidentBatches(torch.zeros(64, 1, 1, 1, dtype=torch.uint8), 16)
        self.identity = {"task": "line"}
        self.losses = 0

    def loss(self, batch):
        self.losses += 1
        x = torch.randn(16, 1)
        loss = (self.model(x) - (3 * x - 1)).square().mean()
        return StepOutput(loss, {"loss": loss})


LINE_RUN = TrainConfig(steps=6, learning_rate=0.1, warmup_steps=1, log_every=2, checkpoint_every=3)


@pytest.fixture(scope="module")
def splits() -> ImageSplits:
    """48 training and 16 test images of 16x16 pixels: smooth random blobs, seeded."""
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(64, 3, 4, 4, generator=generator)
    images = nn.functional.interpolate(low, size=16, mode="bilinear")  # (64, 3, 16, 16)
    images = (images * 255).round().to(torch.uint8)
    labels = torch.zeros(64, dtype=torch.int64)
    return ImageSplits(images[:48], images[48:], labels[:48], labels[48:], ["blob"], "tiny")


def python(script: str, **kwargs) -> subprocess.Popen:
    """A real Python process running `script`, with this checkout's package."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


LINE_SCRIPT = """
    import os, signal, sys, time
    import torch
    from vqvae_lite.loop import fit
    from vqvae_lite.task import StepOutput, Task
    from vqvae_lite.train_config import TrainConfig
    from vqvae_lite.training_scale import ResidentBatches

    class Line(Task):
        def __init__(self, hook):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(1, 1)
            self.batches = ResidentBatches(torch.zeros(64, 1, 1, 1, dtype=torch.uint8), 16)
            self.identity = {"task": "line"}
            self.hook, self.step = hook, 0

        def loss(self, batch):
            self.step += 1
            self.hook(self.step)
            x = torch.randn(16, 1)
            loss = (self.model(x) - (3 * x - 1)).square().mean()
            return StepOutput(loss, {"loss": loss})
"""


# --- the out folder: checked and locked before the first step ----------------------------------


def test_an_out_that_is_a_file_is_refused_before_the_first_step(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "run"):
        task = Line()
        with pytest.raises(CheckpointError, match=r"a-file.* (is a file|is not writable)"):
            fit(task, LINE_RUN, out=out)
        assert task.losses == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_out_is_refused_before_the_first_step(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o500)
    task = Line()
    try:
        with pytest.raises(CheckpointError, match="is not writable"):
            fit(task, LINE_RUN, out=tmp_path / "locked" / "run")
    finally:
        (tmp_path / "locked").chmod(0o700)
    assert task.losses == 0


def test_a_second_training_into_a_held_folder_is_refused_until_the_holder_dies(tmp_path):
    holder = python(
        LINE_SCRIPT
        + f"""
    def wait(step):
        if step == 2:
            print("training", flush=True)
            time.sleep(600)

    fit(Line(wait), TrainConfig(steps=6, learning_rate=0.1, warmup_steps=1),
        out={str(tmp_path)!r})
    """
    )
    try:
        assert holder.stdout.readline().strip() == "training", holder.stderr.read()
        task = Line()
        with pytest.raises(CheckpointError) as refused:
            fit(task, LINE_RUN, out=tmp_path)
        assert f"{tmp_path} is in use" in str(refused.value)
        assert f"pid {holder.pid}" in str(refused.value)
        assert task.losses == 0 and not (tmp_path / CHECKPOINT).exists()
    finally:
        holder.kill()  # SIGKILL: the lock goes with the process
        holder.wait()
    run = fit(Line(), LINE_RUN, out=tmp_path)
    assert run.step == 6 and load_checkpoint(tmp_path / CHECKPOINT)["step"] == 6
    assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())


def test_the_lock_is_released_when_fit_ends_or_fails(tmp_path):
    fit(Line(), LINE_RUN, out=tmp_path)
    with pytest.raises(FileExistsError):  # refused after the lock was taken
        fit(Line(), LINE_RUN, out=tmp_path)
    run = fit(Line(), replace(LINE_RUN, steps=8), out=tmp_path, resume=True)
    assert run.step == 8


# --- signals --------------------------------------------------------------------------------------


def image_folder(root: Path, train: int = 16, test: int = 4) -> Path:
    """`train` and `test` seeded random images of 8x8 pixels in one class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        (root / split / "dots").mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / "dots" / f"{i}.png")
    return root


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_the_command_line_saves_the_run_on_sigterm_and_ctrl_c(tmp_path, signum, status):
    data = image_folder(tmp_path / "images")
    command = [sys.executable, "-m", "vqvae_lite", "--preset", "cpu", "--device", "cpu"]
    command += ["--data", str(data), "--batch-size", "4", "--time-budget", "0"]
    command += ["--out", str(tmp_path / "run")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{CACHE_ENV: str(tmp_path / "cache")})
    process = subprocess.Popen(
        [*command, "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        for line in process.stdout:  # the first log row: it is training
            if line.startswith("step"):
                break
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == status, stderr
    step = load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"]
    said = stderr.strip().splitlines()[-1]
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert said.startswith(f"stopped by {name}") and f"after step {step}; " in said
    assert f"checkpoint (step {step}) is kept in {tmp_path / 'run' / CHECKPOINT}" in said
    assert step >= 25
    if signum == signal.SIGINT:
        return  # resuming is the same after either
    resumed = subprocess.run(
        [*command, "--steps", str(step + 1), "--resume"], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == step + 1


@pytest.mark.parametrize(
    "checkpoint_every, kept",
    [
        (3, r"the last good checkpoint \(step 3\) is kept in .*checkpoint.pt"),
        (100, "no checkpoint"),
    ],
)
def test_a_second_interrupt_stops_at_once_and_says_what_was_kept(tmp_path, checkpoint_every, kept):
    process = python(
        LINE_SCRIPT
        + f"""
    def two_ctrl_c(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the first: finish the step
            os.kill(os.getpid(), signal.SIGINT)  # the second: stop now
            time.sleep(5)

    config = TrainConfig(steps=8, learning_rate=0.1, warmup_steps=1,
                         checkpoint_every={checkpoint_every})
    try:
        fit(Line(two_ctrl_c), config, out={str(tmp_path)!r})
    except KeyboardInterrupt as error:
        print(type(error).__name__, error.signum, error)
    """
    )
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert stdout.startswith(f"TrainingInterrupted {int(signal.SIGINT)} a second signal, Ctrl-C")
    assert "stopped training at once" in stdout
    assert re.search(kept, stdout), stdout
    if checkpoint_every == 3:
        assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    else:
        assert not (tmp_path / CHECKPOINT).exists()


class TermedAtStep2(Line):
    def loss(self, batch):
        if self.losses == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the end of this step
        return super().loss(batch)


def test_sigterm_in_the_api_saves_then_raises_and_the_handlers_come_back(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    task = TermedAtStep2()
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM after step 2; .*\(step 2\)") as stop:
        fit(task, LINE_RUN, out=tmp_path)
    assert stop.value.signum == signal.SIGTERM and isinstance(stop.value, KeyboardInterrupt)
    assert task.losses == 2 and load_checkpoint(tmp_path / CHECKPOINT)["step"] == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# --- checkpoints: checksums, leftovers, resuming a finished run ----------------------------------


def test_a_checkpoint_with_flipped_bytes_is_refused_naming_the_file(tmp_path):
    fit(Line(), LINE_RUN, out=tmp_path)
    path = tmp_path / CHECKPOINT
    state = load_checkpoint(path)
    data = bytearray(path.read_bytes())
    tensors = {  # where each tensor is in a state, and its values
        "a weight": (lambda state: state["model"]["weight"]),
        "an Adam moment": (lambda state: state["optimizer"]["state"][0]["exp_avg_sq"]),
    }
    for name, get in tensors.items():
        values = get(state).numpy().tobytes()  # (1, 1) float32: 4 bytes
        assert data.count(values) == 1, name
        damaged = bytearray(data)
        damaged[data.find(values)] ^= 0b1  # one bit
        path.write_bytes(damaged)
        plain = torch.load(path, weights_only=True)  # torch alone reads it without a word
        assert not torch.equal(get(plain), get(state)), name
        with pytest.raises(CheckpointError, match=f"{path} is damaged"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match="damaged"):
            fit(Line(), replace(LINE_RUN, steps=9), out=tmp_path, resume=True)
        assert path.read_bytes() == damaged  # refused, and left as it was
    path.write_bytes(data)
    assert load_checkpoint(path)["step"] == 6


def test_a_checkpoint_without_its_checksum_is_refused(tmp_path):
    fit(Line(), LINE_RUN, out=tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["sha256"]
    torch.save(state, tmp_path / "stripped.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "stripped.pt")


def test_leftover_partial_files_are_removed_by_the_next_write(tmp_path):
    leftovers = [tmp_path / f".{CHECKPOINT}.{pid}.partial" for pid in (12345, 99999)]
    for leftover in leftovers:
        leftover.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.777.partial"  # another file's: not this write's business
    other.write_bytes(b"x")
    state = {"identity": {}, "train_config": {}, "model": {}, "step": 1}
    save_checkpoint(tmp_path / CHECKPOINT, state)
    assert not any(leftover.exists() for leftover in leftovers)
    assert other.exists() and load_checkpoint(tmp_path / CHECKPOINT)["step"] == 1


def test_resuming_a_run_that_is_already_at_its_steps_trains_nothing(tmp_path):
    fit(Line(), LINE_RUN, out=tmp_path)
    before = (tmp_path / CHECKPOINT).read_bytes()
    for steps in (6, 4):
        task = Line()
        run = fit(task, replace(LINE_RUN, steps=steps), out=tmp_path, resume=True)
        assert task.losses == 0 and run.step == 6
    assert (tmp_path / CHECKPOINT).read_bytes() == before


class EvaluatedLine(Line):
    def evaluate(self):
        return {"weight": self.model.weight.item()}


def test_the_command_line_says_a_resumed_run_is_already_done(tmp_path, monkeypatch, capsys):
    fit(EvaluatedLine(), LINE_RUN, out=tmp_path)

    def no_data(*args, **kwargs):
        raise AssertionError("the data must not be loaded")

    monkeypatch.setattr(training_flags, "load_cifar10", no_data)
    status = main(["--preset", "cpu", "--out", str(tmp_path), "--resume", "--steps", "4"])
    printed = capsys.readouterr().out
    assert status == 0 and "trained" not in printed
    assert "already at step 6; pass --steps > 6 to train further" in printed


# --- divergence ----------------------------------------------------------------------------------


def test_weights_that_diverge_before_the_loss_give_the_divergence_message(splits, tmp_path):
    config = replace(TINY_RUN, steps=8, learning_rate=1e30, warmup_steps=0, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError) as stopped:
        train(TINY_MODEL, config, splits, out=tmp_path)
    message = str(stopped.value)
    assert "expected a float tensor" not in message
    assert "training diverged" in message and "lower learning rate (this run: 1e+30)" in message
    step = int(message.split(" at step ")[1].split(";")[0]) if " at step " in message else None
    saved = load_checkpoint(tmp_path / CHECKPOINT)["step"]
    assert f"checkpoint (step {saved})" in message and step == saved + 1


class NaNBatches:
    """Batches with a NaN in them: bad input, not divergence."""

    epoch = 0

    def __next__(self):
        return torch.full((4, 3, 8, 8), float("nan"))


def test_a_non_finite_input_is_still_an_input_error(tmp_path):
    task = Line()
    task.model, task.batches = VQVAE(TINY_MODEL), NaNBatches()
    task.loss = lambda batch: StepOutput(task.model(batch).x_hat.mean(), {})
    with pytest.raises(ValueError, match="finite values") as refused:
        fit(task, LINE_RUN, out=tmp_path)
    assert not isinstance(refused.value, NonFiniteLossError)


class HugeGradient(Line):
    """A finite loss whose gradient squared overflows: Adam's second moment becomes inf while
    the weights stay finite."""

    def loss(self, batch):
        self.losses += 1
        loss = self.model.weight.sum() * 1e30
        return StepOutput(loss, {"loss": loss.detach()})


def test_a_state_with_infinite_optimiser_moments_is_never_saved(tmp_path):
    with pytest.raises(NonFiniteLossError) as stopped:
        fit(HugeGradient(), LINE_RUN, out=tmp_path)
    message = str(stopped.value)
    assert "Adam's moments became NaN or inf by step 3" in message
    assert (
        f"no checkpoint was written to {tmp_path}" in message and "lower learning rate" in message
    )
    assert not (tmp_path / CHECKPOINT).exists()


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def no_data(monkeypatch):
    """The data must not be loaded: a mistake in the flags is found first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(training_flags, "load_cifar10", refuse)


@pytest.mark.parametrize("device", ["foo", "cuda:7", "meta"])
def test_an_unusable_device_is_one_line_before_the_data(device, no_data, tmp_path, capsys):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main(["--device", device, "--out", str(tmp_path)]) == 1
    said = capsys.readouterr().err.strip()
    assert "\n" not in said and said.startswith(f"error: device {device!r} is not usable here")
    assert "devices on this machine: cpu" in said


def test_fewer_images_than_the_batch_size_names_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = image_folder(tmp_path / "images", train=6, test=2)
    flags = ["--preset", "cpu", "--device", "cpu", "--data", str(data), "--out", str(tmp_path)]
    assert main([*flags, "--batch-size", "8"]) == 1
    said = capsys.readouterr().err.strip()
    assert said.startswith("error: --batch-size 8 is more than the 6 training images")
    assert "\n" not in said
    assert main(flags) == 1  # the preset's batch of 128
    assert "--batch-size 6 or less" in capsys.readouterr().err


def test_data_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = image_folder(tmp_path / "images", train=6, test=2)
    (data / "test" / "cats").mkdir()  # a class that train/ lacks
    Image.new("RGB", (8, 8)).save(data / "test" / "cats" / "0.png")
    flags = ["--device", "cpu", "--data", str(data), "--out", str(tmp_path / "run")]
    for more, match in ((["--image-size", "30"], "multiple of 4"), ([], "train/ lacks")):
        assert main([*flags, *more]) == 1
        said = capsys.readouterr().err.strip()
        assert said.startswith("error: ") and match in said and "\n" not in said
    assert not (tmp_path / "run").exists()


def test_the_image_size_flag_reaches_the_loader(monkeypatch, tmp_path):
    asked = {}

    def record(data, image_size=None):
        asked.update(data=data, image_size=image_size)
        raise KeyboardInterrupt  # stop there

    monkeypatch.setattr(training_flags, "load_cifar10", record)
    flags = ["--device", "cpu", "--out", str(tmp_path)]
    assert main([*flags, "--data", "x", "--image-size", "16"]) == 130
    assert asked == {"data": "x", "image_size": 16}
    assert main(flags) == 130
    assert asked["image_size"] is None


@pytest.mark.parametrize(
    "flags, changes",
    [
        (["--time-budget", "0"], {"time_budget_s": None}),
        (["--batch-size", "16"], {"batch_size": 16}),
        (["--learning-rate", "5e-4"], {"learning_rate": 5e-4}),
    ],
)
def test_flags_reach_the_training_config(flags, changes):
    args = cli_module.parser().parse_args(["--preset", "cpu", *flags])
    _, config, _ = cli_module.configs(args, cli_module.parser().error)
    assert all(getattr(config, key) == value for key, value in changes.items())


@pytest.mark.parametrize(
    "flags", [["--batch-size", "0"], ["--image-size", "2"], ["--learning-rate", "-1"]]
)
def test_impossible_flags_are_refused_by_the_parser(flags, capsys):
    with pytest.raises(SystemExit) as stop:
        main(flags)
    assert stop.value.code == 2 and flags[0] in capsys.readouterr().err


def test_the_help_says_that_a_time_budget_of_0_means_no_limit(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "0 means no limit" in " ".join(capsys.readouterr().out.split())


# --- a trained model on an image file -----------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(TINY_MODEL).eval()


def test_an_image_file_to_codes_and_back(model, tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (18, 23, 3), dtype=np.uint8)  # 23x18: not multiples of 4
    Image.fromarray(pixels).save(tmp_path / "mine.png")
    image = load_image(tmp_path / "mine.png")
    assert image.shape == (1, 3, 16, 20) and image.dtype == torch.uint8
    assert torch.equal(image[0].permute(1, 2, 0), torch.from_numpy(pixels[:16, :20]))
    codes = encode_image(model, tmp_path / "mine.png")
    assert codes.shape == (1, 4, 5) and codes.dtype == torch.int64
    x = image.float() / 127.5 - 1
    assert torch.equal(codes, model(x).indices)
    decoded = decode_codes(model, codes)
    assert decoded.size == (20, 16) and decoded.mode == "RGB"
    expected = ((model.decode_indices(codes) + 1) / 2).clamp(0, 1)[0]  # (3, 16, 20)
    got = torch.from_numpy(np.array(decoded)).permute(2, 0, 1).float() / 255
    assert (got - expected).abs().max() <= 0.5 / 255 + 1e-6
    again = reconstruct(model, tmp_path / "mine.png")
    assert np.array_equal(np.asarray(again), np.asarray(decoded))
    assert encode_image(model, tmp_path / "mine.png", size=8).shape == (1, 2, 2)


def test_using_a_model_refuses_training_mode_and_wrong_shapes(model, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "mine.png")
    model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            encode_image(model, tmp_path / "mine.png")
    finally:
        model.eval()
    with pytest.raises(ValueError, match=r"\(1, h, w\)"):
        decode_codes(model, torch.zeros(2, 2, 2, dtype=torch.int64))


@pytest.mark.parametrize("name, content", [("notes.txt", "not an image"), ("missing.png", None)])
def test_a_file_that_is_not_an_image_is_a_data_error_naming_it(model, tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=f"{name} cannot be read as an image"):
        encode_image(model, path)
