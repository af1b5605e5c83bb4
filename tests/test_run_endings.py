"""How a run ends when something goes wrong (chapter 6's loop, appendix "Training for real"):
a full disk at a checkpoint, a kill during the final evaluation, a loss that runs away while
it is still finite, a resume that lowers the learning rate, and flags that would train into
the wrong place or on a device that holds no data."""

import errno
from dataclasses import replace

import pytest
import torch
from torch import nn

import vqvae_lite.cli as cli_module
import vqvae_lite.train as train_module
import vqvae_lite.training_flags as training_flags
from vqvae_lite.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from vqvae_lite.cli import main
from vqvae_lite.divergence import RUNAWAY, NonFiniteLossError
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.loop import fit
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_scale import ResidentBatches

LINE_RUN = TrainConfig(steps=6, learning_rate=0.1, warmup_steps=1, log_every=2, checkpoint_every=3)


class Line(Task):
    """Fit y = 3x - 1 with one linear layer; `blow_up` multiplies the loss of those calls."""

    def __init__(self, blow_up: dict[int, float] | None = None):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.batches = ResidentBatches(torch.zeros(64, 1, 1, 1, dtype=torch.uint8), 16)
        self.identity = {"task": "line"}
        self.blow_up, self.losses, self.evaluations = blow_up or {}, 0, 0

    def loss(self, batch):
        self.losses += 1
        x = torch.randn(16, 1)
        loss = (self.model(x) - (3 * x - 1)).square().mean() * self.blow_up.get(self.losses, 1.0)
        return StepOutput(loss, {"loss": loss})

    def evaluate(self):
        self.evaluations += 1
        return {"weight": self.model.weight.item()}


def full_disk(monkeypatch, how: str, after: int = 0) -> None:
    """torch.save fails as on a full disk, after `after` saves that succeed: with the system's
    OSError, or with the RuntimeError that torch's zip writer raises while handling it."""
    original, calls = torch.save, {"n": 0}

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after:
            return original(*args, **kwargs)
        full = OSError(errno.ENOSPC, "No space left on device")
        if how == "oserror":
            raise full
        try:
            raise full
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos"
            ) from None

    monkeypatch.setattr(torch, "save", save)


# --- a full disk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["oserror", "torch-writer"])
def test_a_full_disk_says_which_step_was_not_saved_and_what_is_kept(tmp_path, monkeypatch, how):
    full_disk(monkeypatch, how, after=1)  # the checkpoint of step 3 is written, step 6's is not
    with pytest.raises(CheckpointError) as refused:
        fit(Line(), LINE_RUN, out=tmp_path)
    message = str(refused.value)
    assert message.startswith("step 6 could not be saved: ") and "\n" not in message
    assert "(No space left on device)" in message
    assert message.endswith(f"the last good checkpoint (step 3) is kept in {tmp_path / CHECKPOINT}")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", CHECKPOINT]  # no partial file


def test_a_full_disk_before_any_checkpoint_says_nothing_was_kept(tmp_path, monkeypatch):
    full_disk(monkeypatch, "oserror")
    with pytest.raises(CheckpointError, match=r"^step 3 could not be saved: .*no checkpoint was"):
        fit(Line(), LINE_RUN, out=tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()


@pytest.fixture(scope="module")
def splits() -> ImageSplits:
    """24 training and 8 test images of 16x16 pixels, seeded."""
    images = (torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).byte()
    labels = torch.zeros(32, dtype=torch.int64)
    return ImageSplits(images[:24], images[24:], labels[:24], labels[24:], ["noise"], "tiny")


def test_the_command_line_exits_1_with_one_line_on_a_full_disk(
    tmp_path, monkeypatch, capsys, splits
):
    monkeypatch.setattr(training_flags, "load_cifar10", lambda data, **kwargs: splits)
    full_disk(monkeypatch, "torch-writer")
    flags = ["--preset", "cpu", "--device", "cpu", "--batch-size", "8", "--steps", "2"]
    assert main([*flags, "--time-budget", "0", "--out", str(tmp_path / "run")]) == 1
    said = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert said.startswith("error: step 2 could not be saved: ")
    assert "No space left on device" in said and "no checkpoint was written" in said


# --- a kill during the final evaluation ----------------------------------------------------------


class KilledDuringEvaluation(Line):
    def evaluate(self):
        raise RuntimeError("killed")  # what SIGKILL or a power cut does, as far as the disk knows


def test_a_run_killed_during_its_final_evaluation_keeps_every_step(tmp_path):
    config = replace(LINE_RUN, checkpoint_every=4)  # periodic checkpoints at step 4 only
    with pytest.raises(RuntimeError, match="killed"):
        fit(KilledDuringEvaluation(), config, out=tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    assert saved["step"] == 6 and saved["test"] == {}
    task = Line()
    run = fit(task, config, out=tmp_path, resume=True)  # evaluates it, trains nothing
    assert task.losses == 0 and task.evaluations == 1 and run.step == 6
    assert (
        load_checkpoint(tmp_path / CHECKPOINT)["test"]
        == run.test
        == {"weight": pytest.approx(run.task.model.weight.item())}
    )


def test_the_command_line_resumes_a_run_killed_during_its_final_evaluation(
    tmp_path, monkeypatch, capsys, splits
):
    monkeypatch.setattr(training_flags, "load_cifar10", lambda data, **kwargs: splits)
    flags = ["--preset", "cpu", "--device", "cpu", "--batch-size", "8", "--steps", "2"]
    flags += ["--time-budget", "0", "--out", str(tmp_path)]
    with monkeypatch.context() as patch:
        patch.setattr(train_module.VQVAETask, "evaluate", KilledDuringEvaluation.evaluate)
        with pytest.raises(RuntimeError, match="killed"):
            main(flags)
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 2
    capsys.readouterr()
    assert main([*flags, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "test (8 images): NMSE" in printed
    assert load_checkpoint(tmp_path / CHECKPOINT)["test"]["codes_used"] >= 1


def test_the_last_checkpoint_holds_the_final_evaluation(tmp_path):
    run = fit(Line(), LINE_RUN, out=tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["test"] == run.test != {}


# --- a loss that runs away while it is finite ----------------------------------------------------


def test_a_finite_loss_that_runs_away_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    task = Line(blow_up={5: 1e31})  # finite in float32, and far beyond any loss of this run
    with pytest.raises(NonFiniteLossError) as stopped:
        fit(task, LINE_RUN, out=tmp_path)
    message = str(stopped.value)
    assert "the loss ran away" in message and " at step 5; " in message
    assert "the last good checkpoint (step 3)" in message
    assert "Resume it with a lower learning rate (this run: 0.1)" in message
    assert task.losses == 5 and load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3


def test_a_loss_that_only_falls_far_is_not_taken_for_divergence(tmp_path):
    task = Line(blow_up={step: 10.0**-step for step in range(2, 7)})  # down to 1e-6
    assert fit(task, LINE_RUN, out=tmp_path).step == 6
    assert RUNAWAY == 1e6


def test_a_resumed_run_measures_a_runaway_against_the_first_loss_of_the_run(tmp_path):
    fit(Line(), LINE_RUN, out=tmp_path)
    first = load_checkpoint(tmp_path / CHECKPOINT)["first_loss"]
    assert first > 0
    task = Line(blow_up={1: 1e31})  # the first step after the resume runs away
    with pytest.raises(NonFiniteLossError, match=r"at step 7; the last good checkpoint \(step 6\)"):
        fit(task, replace(LINE_RUN, steps=9), out=tmp_path, resume=True)


# --- a resume may lower the learning rate --------------------------------------------------------


def test_a_resume_may_lower_the_learning_rate_and_says_so_but_never_raise_it(tmp_path, capsys):
    fit(Line(), LINE_RUN, out=tmp_path)
    lower = replace(LINE_RUN, steps=9, learning_rate=0.05)
    run = fit(Line(), lower, out=tmp_path, resume=True)
    assert (
        run.step == 9
        and load_checkpoint(tmp_path / CHECKPOINT)["train_config"]["learning_rate"] == 0.05
    )
    assert "resumed at step 6 with a lower setting: learning_rate: 0.1 -> 0.05" in (
        capsys.readouterr().out
    )
    assert run.history[-1]["learning_rate"] < 0.05
    higher = replace(lower, steps=12, learning_rate=0.2)
    with pytest.raises(CheckpointError, match=r"learning_rate: 0.05 -> 0.2 \(a resume may lower"):
        fit(Line(), higher, out=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="warmup_steps: 1 -> 5"):
        fit(Line(), replace(lower, steps=12, warmup_steps=5), out=tmp_path, resume=True)


# --- the command line's flags --------------------------------------------------------------------


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(training_flags, "load_cifar10", refuse)


@pytest.mark.parametrize("out", ["", " "])
def test_an_empty_out_is_refused_by_the_parser(out, no_data, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--device", "cpu", "--out", out])
    assert stop.value.code == 2
    said = capsys.readouterr().err
    assert "--out" in said and "needs a folder name" in said


def test_the_checkpoint_every_flag_reaches_the_config(capsys):
    args = cli_module.parser().parse_args(["--preset", "cpu", "--checkpoint-every", "7"])
    _, config, _ = cli_module.configs(args, cli_module.parser().error)
    assert config.checkpoint_every == 7
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint-every", "0"])
    assert stop.value.code == 2 and "--checkpoint-every must be at least 1" in (
        capsys.readouterr().err
    )


def test_a_system_error_is_one_line_naming_the_file_without_its_number(
    tmp_path, monkeypatch, capsys
):
    """A cache folder that is a file: the loader's FileExistsError, said in words."""
    from PIL import Image

    for split in ("train", "test"):
        folder = tmp_path / "images" / split / "grey"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (16, 16), (16 * i, 16 * i, 16 * i)).save(folder / f"{i}.png")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("VQVAE_LITE_CACHE", str(blocker))
    flags = ["--preset", "cpu", "--device", "cpu", "--batch-size", "4", "--steps", "1"]
    status = main([*flags, "--data", str(tmp_path / "images"), "--out", str(tmp_path / "run")])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1 and said.startswith("error: cannot use "), said
    assert "Errno" not in said and str(blocker) in said
