"""Chapter 8's command, `python -m vqvae_lite.prior`: it follows the VQ-VAE's command (the
images it trained on, at the size it trained on, and the same training flags), refuses a bad
`--out` before writing into it, says what a stop signal saved, and explains every error."""

import os
import signal

import pytest
import torch
from PIL import Image

import vqvae_lite.prior as prior_module
import vqvae_lite.prior_task as prior_task
from vqvae_lite.checkpoint import CHECKPOINT, claim_folder, load_checkpoint
from vqvae_lite.cli import main as train_vqvae
from vqvae_lite.image_cache import CACHE_ENV
from vqvae_lite.prior import main as train_prior


def write_images(root, size: int, train: int, test: int) -> str:
    """Two classes of random size x size images (dark and light) in train/ and test/."""
    rng = torch.Generator().manual_seed(0)
    for split, count in (("train", train), ("test", test)):
        for name in ("dark", "light"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(128, (size, size, 3), generator=rng, dtype=torch.uint8)
                pixels += 127 * (name == "light")
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One image cache for the module: the VQ-VAEs and the priors read the same images."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def vqvae_32(tmp_path_factory, cache):
    """32x32 images (32 per class) and a VQ-VAE trained one step on them at their own size."""
    root = tmp_path_factory.mktemp("run32")
    data = write_images(root / "images", 32, train=32, test=4)
    out = root / "vqvae"
    command = ["--preset", "cpu", "--device", "cpu", "--data", data, "--out", str(out)]
    assert train_vqvae([*command, "--steps", "1", "--batch-size", "8"]) == 0
    return data, out / CHECKPOINT


@pytest.fixture(scope="module")
def vqvae_64_at_32(tmp_path_factory, cache):
    """64x64 images (20 per class: 40, fewer than the prior's batch of 64) and a VQ-VAE trained
    on them with --image-size 32."""
    root = tmp_path_factory.mktemp("run64")
    data = write_images(root / "images", 64, train=20, test=2)
    out = root / "vqvae"
    command = ["--preset", "cpu", "--device", "cpu", "--data", data, "--out", str(out)]
    assert train_vqvae([*command, "--steps", "1", "--batch-size", "8", "--image-size", "32"]) == 0
    return data, out / CHECKPOINT


def prior_command(vqvae, out, *flags) -> list[str]:
    data, checkpoint = vqvae
    common = ["--preset", "cpu", "--device", "cpu", "--prior", "transformer"]
    return [*common, "--data", data, "--vqvae", str(checkpoint), "--out", str(out), *flags]


def test_the_command_trains_a_prior_on_a_checkpoint_writes_samples_and_resumes(
    vqvae_32, tmp_path, capsys
):
    out = tmp_path / "prior"
    assert train_prior(prior_command(vqvae_32, out, "--steps", "2")) == 0
    with Image.open(out / "samples.png") as png:  # 10 samples per class: 2 rows of 10
        assert png.mode == "RGB" and 4 * png.height < png.width < 6 * png.height
    assert (out / "codes.pt").is_file()
    assert train_prior(prior_command(vqvae_32, out, "--steps", "3", "--resume")) == 0
    assert load_checkpoint(out / CHECKPOINT)["step"] == 3
    capsys.readouterr()
    missing = prior_command(("unused", tmp_path / "none.pt"), tmp_path / "x")
    assert train_prior(missing) == 1
    assert "none.pt" in capsys.readouterr().err


def test_the_command_samples_with_the_guidance_it_is_given(vqvae_32, tmp_path, monkeypatch):
    guidances = []

    def recording_sample(*args):
        guidances.append(args[5])  # sample(prior, labels, grid, temperature, generator, guidance)
        return sample(*args)

    sample = prior_module.sample
    monkeypatch.setattr(prior_module, "sample", recording_sample)
    command = prior_command(vqvae_32, tmp_path / "prior", "--steps", "1", "--guidance", "2")
    assert train_prior(command) == 0
    assert guidances == [2.0] and (tmp_path / "prior" / "samples.png").is_file()


def test_the_command_takes_the_training_flags_of_the_vqvae_command(vqvae_32, tmp_path):
    out = tmp_path / "prior"
    flags = ["--steps", "2", "--batch-size", "4", "--learning-rate", "1e-3", "--time-budget", "0"]
    assert train_prior(prior_command(vqvae_32, out, *flags, "--checkpoint-every", "1")) == 0
    saved = load_checkpoint(out / CHECKPOINT)["train_config"]
    assert (saved["steps"], saved["batch_size"], saved["learning_rate"]) == (2, 4, 1e-3)
    assert saved["time_budget_s"] is None and saved["checkpoint_every"] == 1


def test_images_not_at_the_vqvaes_training_size_are_refused_before_anything_is_written(
    vqvae_64_at_32, tmp_path, capsys
):
    out = tmp_path / "prior"
    flags = ["--batch-size", "8", "--steps", "1"]  # a short run, should it not be refused
    assert train_prior(prior_command(vqvae_64_at_32, out, *flags)) == 1
    error = capsys.readouterr().err
    assert "not the images the VQ-VAE trained on" in error and "--image-size" in error
    assert not out.exists()


def test_the_image_size_the_vqvae_trained_with_gives_its_grid_of_codes(vqvae_64_at_32, tmp_path):
    out = tmp_path / "prior"
    flags = ["--image-size", "32", "--batch-size", "8", "--steps", "1"]
    assert train_prior(prior_command(vqvae_64_at_32, out, *flags)) == 0
    identity = load_checkpoint(out / CHECKPOINT)["identity"]
    assert tuple(identity["prior_config"]["grid"]) == (8, 8)  # 32 / 4, not 64 / 4


def test_fewer_images_than_a_batch_name_the_batch_size_flag(vqvae_64_at_32, tmp_path, capsys):
    out = tmp_path / "prior"
    flags = ["--image-size", "32", "--steps", "1"]
    assert train_prior(prior_command(vqvae_64_at_32, out, *flags)) == 1
    error = capsys.readouterr().err  # the cpu preset's batch is 64
    assert "--batch-size 64 is more than the 40 training images" in error
    assert "pass --batch-size 40 or less" in error and not out.exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--temperature", "inf"], "--temperature must be finite and above 0, got inf"),
        (["--temperature", "0"], "--temperature must be finite and above 0"),
        (["--guidance", "-1"], "--guidance must be finite and at least 0, got -1.0"),
        (["--guidance", "nan"], "--guidance must be finite and at least 0"),
        (["--learning-rate", "nan"], "--learning-rate must be finite and above 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--image-size", "2"], "--image-size must be at least 4"),
        (["--time-budget", "-1"], "--time-budget must be at least 0"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
        (["--out", ""], "--out: needs a folder name"),
    ],
)
def test_flags_out_of_range_are_refused_at_once(tmp_path, capsys, flags, words):
    command = ["--vqvae", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x"), *flags]
    with pytest.MonkeyPatch.context() as patch:  # a refused --out '' would write here
        patch.chdir(tmp_path)
        with pytest.raises(SystemExit) as stopped:
            train_prior(command)
    assert stopped.value.code == 2 and words in capsys.readouterr().err


def refused(vqvae, out, capsys, *flags) -> str:
    """Run the command into `out`, expect exit status 1, return what it printed as the error."""
    assert train_prior(prior_command(vqvae, out, "--steps", "1", *flags)) == 1
    return capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused_by_name_not_by_errno(vqvae_32, tmp_path, capsys):
    out = tmp_path / "prior"
    out.write_text("not a folder")
    error = refused(vqvae_32, out, capsys)
    assert f"{out} is a file" in error and "Errno" not in error


def test_an_out_holding_a_run_gets_no_codes_without_resume(vqvae_32, tmp_path, capsys):
    out = tmp_path / "prior"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"a finished run")
    assert "exists: resume it, or choose another folder" in refused(vqvae_32, out, capsys)
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [CHECKPOINT]


def test_resuming_an_out_without_a_run_writes_no_codes(vqvae_32, tmp_path, capsys):
    out = tmp_path / "prior"
    assert "no checkpoint at" in refused(vqvae_32, out, capsys, "--resume")
    assert not (out / "codes.pt").exists()


def test_an_out_in_use_by_another_training_gets_no_codes(vqvae_32, tmp_path, capsys):
    out = tmp_path / "prior"
    lock = claim_folder(out)  # as another training would
    try:
        assert "is in use" in refused(vqvae_32, out, capsys)
    finally:
        lock.close()
    assert not (out / "codes.pt").exists()


@pytest.mark.parametrize(
    "signum, status, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_stop_signal_saves_and_says_what_was_saved(
    vqvae_32, tmp_path, capsys, monkeypatch, signum, status, name
):
    real_loss = prior_task.PriorTask.loss

    def loss_then_signal(self, batch):
        os.kill(os.getpid(), signum)  # arrives during the first step
        return real_loss(self, batch)

    monkeypatch.setattr(prior_task.PriorTask, "loss", loss_then_signal)
    out = tmp_path / "prior"
    assert train_prior(prior_command(vqvae_32, out, "--steps", "5")) == status
    error = capsys.readouterr().err
    assert f"stopped by {name}" in error and "after step 1" in error
    assert str(out / CHECKPOINT) in error and load_checkpoint(out / CHECKPOINT)["step"] == 1


def test_a_system_error_names_the_file_without_an_errno(vqvae_32, tmp_path, capsys, monkeypatch):
    cache_file = tmp_path / "cache"
    cache_file.write_text("a file where the image cache should be a folder")
    monkeypatch.setenv(CACHE_ENV, str(cache_file))
    error = refused(vqvae_32, tmp_path / "prior", capsys)
    assert f"cannot use {cache_file}: File exists" in error and "Errno" not in error


def test_a_registered_prior_without_preset_sizes_trains_with_its_own_defaults(vqvae_32, tmp_path):
    out = tmp_path / "prior"
    command = prior_command(vqvae_32, out, "--steps", "1")
    command[command.index("transformer")] = "masked-pixelcnn"
    assert train_prior(command) == 0
    saved = load_checkpoint(out / CHECKPOINT)["identity"]["prior_config"]
    assert (saved["name"], saved["options"]) == ("masked-pixelcnn", {})
