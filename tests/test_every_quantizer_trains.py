"""Every registered quantiser trains from the command line with its own defaults, and a
quantiser added as one new module of the package is found by its name, with no other file of
the package edited."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqvae_lite
from vqvae_lite.cli import main
from vqvae_lite.quantizer import registered_quantizers

PACKAGE = Path(vqvae_lite.__file__).resolve().parent

TOY_MODULE = '''"""A quantiser that rounds every latent to a multiple of 1/4 in one channel."""

import torch
from torch import Tensor

from vqvae_lite.quantizer import Quantized, Quantizer, check_indices, register_quantizer


@register_quantizer("{name}")
class RoundedMean(Quantizer):
    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim

    def forward(self, z_e: Tensor) -> Quantized:
        level = (z_e.mean(dim=1) * 4).round().clamp(0, self.num_codes - 1)  # (B, H, W)
        z_q = z_e + (level.unsqueeze(1) / 4 - z_e).detach()
        return Quantized(z_q, level.long(), {{}})

    def decode(self, indices: Tensor) -> Tensor:
        check_indices(indices, self.num_codes)
        return (indices.float() / 4).unsqueeze(1).expand(-1, self.dim, -1, -1)
'''


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of 24 training and 8 test images, 16 x 16 pixels, in two classes."""
    root = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("test", 4)):
        for label in ("red", "blue"):
            folder = root / split / label
            folder.mkdir(parents=True)
            pixels = torch.randint(0, 256, (count, 16, 16, 3), generator=generator)
            for i, image in enumerate(pixels.to(torch.uint8).numpy()):
                Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{i}.png")
    return root


def command(images: Path, out: Path, quantizer: str) -> list[str]:
    return ["--preset", "cpu", "--device", "cpu", "--data", str(images), "--steps", "2",
            "--batch-size", "8", "--quantizer", quantizer, "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("name", sorted(registered_quantizers()))
def test_every_registered_quantizer_trains_from_the_command_line(
    name, images, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("VQVAE_LITE_CACHE", str(tmp_path / "cache"))
    status = main(command(images, tmp_path / "run", name))
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "trained 2 steps (16 images)" in printed.out, printed.out
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_a_quantizer_added_as_one_new_module_is_found_by_name(images, tmp_path):
    name = f"toy-{uuid.uuid4().hex[:8]}"
    module = PACKAGE / f"toy_{name[4:]}.py"
    module.write_text(TOY_MODULE.format(name=name), encoding="utf-8")
    environment = os.environ | {"VQVAE_LITE_CACHE": str(tmp_path / "cache")}
    try:

        def run(*arguments: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "vqvae_lite", *arguments],
                capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300,
            )  # fmt: skip

        listed = run("--help")
        assert name in listed.stdout, listed.stdout
        trained = run(*command(images, tmp_path / "run", name), "--steps", "2")
    finally:
        module.unlink()
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "trained 2 steps (16 images)" in trained.stdout, trained.stdout
