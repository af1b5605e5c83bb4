"""The reference models shipped with the package: every file matches its checksum, holds
weights only, stays within the size budget, and re-evaluates to the metrics its manifest
records; a damaged or missing file, or an unknown name, is refused; a shipped name works
wherever a checkpoint's path does; and a built wheel carries the weights."""

import json
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch
from PIL import Image

import vqvae_lite.shipped as shipped
from vqvae_lite.checkpoint import CheckpointError
from vqvae_lite.code_dataset import encode_codes
from vqvae_lite.data import load_cifar10
from vqvae_lite.image_cache import CACHE_ENV
from vqvae_lite.images import encode_image, reconstruct
from vqvae_lite.likelihood import position_bits
from vqvae_lite.metrics import evaluate
from vqvae_lite.prior import main as train_prior
from vqvae_lite.shipped import file_sha256, load_vqvae, manifest, pretrained, provenance
from vqvae_lite.shipped_priors import load_prior, pretrained_prior

MOST_BYTES = 15_000_000  # all shipped files together
PROVENANCE = {"command", "commit", "hardware", "wall_time_s", "steps", "batch_size",
              "images_seen", "epochs", "test"}  # fmt: skip
VQVAES = sorted(name for name, entry in manifest().items() if entry["kind"] == "vqvae")
PRIORS = sorted(name for name, entry in manifest().items() if entry["kind"] == "prior")


def test_the_reference_models_are_shipped_within_the_size_budget():
    assert {"default", "plain"} <= set(VQVAES) and {"transformer", "pixelcnn"} <= set(PRIORS)
    folder = shipped.weights_folder()
    sizes = [(folder / entry["file"]).stat().st_size for entry in manifest().values()]
    assert sum(sizes) <= MOST_BYTES
    shipped_files = {p.name for p in folder.iterdir()} - {shipped.MANIFEST}
    assert shipped_files == {entry["file"] for entry in manifest().values()}


@pytest.mark.parametrize("name", sorted(manifest()))
def test_each_file_matches_its_checksum_and_holds_weights_and_provenance(name):
    entry = manifest()[name]
    path = shipped.weights_folder() / entry["file"]
    assert file_sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
    contents = torch.load(path, weights_only=True)
    assert contents["format"] == shipped.WEIGHTS_FORMAT
    assert set(contents) <= {"format", "config", "weights", "data_variance", "vqvae"}
    assert PROVENANCE <= set(provenance(name))
    made = provenance(name)
    assert made["images_seen"] == made["steps"] * made["batch_size"]


@pytest.fixture(scope="module")
def splits():
    return load_cifar10()


@pytest.mark.parametrize("name", VQVAES)
def test_a_shipped_vqvae_re_evaluates_to_its_recorded_metrics(name, splits):
    model = pretrained(name)
    assert not model.training
    recorded = provenance(name)["test"]
    measured = evaluate(model, splits.test, load_vqvae(name)[1])
    assert abs(measured["psnr"] - recorded["psnr"]) < 0.01
    assert measured["codes_used"] == recorded["codes_used"]
    if "float32_psnr" in recorded:  # float16 only where it keeps the PSNR within 0.01 dB
        assert abs(recorded["psnr"] - recorded["float32_psnr"]) <= 0.01


@pytest.fixture(scope="module")
def default_test_codes(splits):
    """The codes of the whole test split under the shipped default model: (10000, 8, 8)."""
    return encode_codes(pretrained("default"), splits.test)


@pytest.mark.parametrize("name", PRIORS)
def test_a_shipped_prior_re_evaluates_to_its_recorded_bits(name, splits, default_test_codes):
    assert provenance(name)["vqvae"] == "default"
    prior = pretrained_prior(name)
    bits = position_bits(prior, default_test_codes, splits.test_labels).mean().item()
    assert abs(bits - provenance(name)["test"]["bits_per_code"]) < 1e-3


@pytest.fixture
def copied_weights(tmp_path, monkeypatch):
    """A copy of the shipped folder that the loaders read instead of the package's."""
    folder = tmp_path / "weights"
    shutil.copytree(shipped.weights_folder(), folder)
    monkeypatch.setattr(shipped, "weights_folder", lambda: folder)
    return folder


def test_a_damaged_file_is_refused(copied_weights):
    path = copied_weights / manifest()["plain"]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        pretrained("plain")


def test_a_missing_file_is_refused(copied_weights):
    (copied_weights / manifest()["transformer"]["file"]).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        pretrained_prior("transformer")


def test_an_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="shipped: default, plain"):
        pretrained("defualt")
    with pytest.raises(ValueError, match="no shipped prior"):
        pretrained_prior("default")  # a VQ-VAE, not a prior
    with pytest.raises(CheckpointError, match="no shipped model has that name"):
        load_vqvae("runs/no-such-run/checkpoint.pt")
    with pytest.raises(CheckpointError, match="no shipped prior has that name"):
        load_prior("transfomer")


def test_a_shipped_name_works_where_a_checkpoint_path_does(tmp_path):
    picture = tmp_path / "picture.png"
    Image.new("RGB", (40, 32), (200, 120, 40)).save(picture)
    codes = encode_image("default", picture)
    assert codes.shape == (1, 8, 10)
    assert torch.equal(codes, encode_image(pretrained("default"), picture))
    assert reconstruct("plain", picture).size == (40, 32)


def test_the_prior_command_takes_a_shipped_vqvae(tmp_path, monkeypatch, capsys):
    """Other images than the model's (so --image-size says to take them), one step."""
    for split, count in (("train", 8), ("test", 2)):
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (32, 32), tuple(c + 5 * i for c in colour))
                image.save(tmp_path / "images" / split / name / f"{i}.png")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    flags = ["--vqvae", "default", "--data", str(tmp_path / "images"), "--image-size", "32",
             "--prior", "transformer", "--preset", "cpu", "--device", "cpu", "--steps", "1",
             "--batch-size", "4", "--out", str(tmp_path / "prior")]  # fmt: skip
    assert train_prior(flags) == 0, capsys.readouterr().err
    assert load_prior(tmp_path / "prior" / "checkpoint.pt").num_codes == 512


def test_a_built_wheel_carries_the_weights_and_loads_them_installed(tmp_path):
    root = shipped.weights_folder().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(tmp_path), str(root)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("vqvae_lite-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    for entry in manifest().values():
        assert f"vqvae_lite/weights/{entry['file']}" in names
    assert "vqvae_lite/weights/manifest.json" in names
    check = (
        "import json, vqvae_lite; print(json.dumps([vqvae_lite.__file__, "
        "vqvae_lite.provenance('default')['test']['psnr'], "
        "vqvae_lite.pretrained('default').quantizer.num_codes]))"
    )
    environment = {"PYTHONPATH": str(tmp_path / "installed"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-s", "-c", check], capture_output=True, text=True,
                         cwd=tmp_path, env=environment)  # fmt: skip
    assert out.returncode == 0, out.stderr
    location, psnr, num_codes = json.loads(out.stdout)
    assert location.startswith(str(tmp_path / "installed"))
    assert psnr == provenance("default")["test"]["psnr"] and num_codes == 512
