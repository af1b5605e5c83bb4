"""The image-folder reader on images as they arrive (chapter 0's `vqvae_lite.image_folder`):
16-bit grayscale, a folder of mixed sizes with one odd file, a size too large for the
machine's memory, and symbolic links that loop."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from file_order import in_file_order
from PIL import Image

from vqvae_lite import image_folder
from vqvae_lite.data import load_cifar10, load_image_folder
from vqvae_lite.image_cache import CACHE_ENV
from vqvae_lite.image_folder import DataError, decode_image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def small_folder(root, size=8, count=2):
    """root/{train,test}/{cat,dog}/NNNN.png of random RGB pixels."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.png")


def test_a_16_bit_grayscale_png_keeps_its_top_byte(tmp_path):
    small_folder(tmp_path / "images")
    gradient = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)  # (8, 8) 0..65535
    path = tmp_path / "images" / "train" / "cat" / "scan.png"
    Image.fromarray(gradient).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"  # how Pillow opens a 16-bit grayscale PNG
    splits = in_file_order(load_image_folder(tmp_path / "images"))
    scan = splits.train[2]  # (3, 8, 8): after 0000.png and 0001.png
    expected = (gradient >> 8).astype(np.uint8)
    for channel in scan:
        assert np.array_equal(channel.numpy(), expected)
    assert (scan == 255).float().mean() < 0.05  # not white


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16B", np.array([[0, 256, 4096, 65535]]), [[0, 1, 16, 255]]),
        ("I", np.array([[0, 256, 4096, 65535]]), [[0, 1, 16, 255]]),  # a 16-bit range
        ("I", np.array([[0, 7, 128, 255]]), [[0, 7, 128, 255]]),  # an 8-bit range
        ("F", np.array([[0.0, 0.5, 1.0, 0.25]]), [[0, 128, 255, 64]]),  # fractions of white
    ],
)
def test_every_grayscale_mode_of_more_than_8_bits_is_scaled(tmp_path, mode, values, expected):
    dtype = {"I;16B": ">u2", "I": np.int32, "F": np.float32}[mode]
    image = Image.frombytes(mode, (4, 1), values.astype(dtype).tobytes())  # 4 wide, 1 high
    path = tmp_path / "image.tiff"
    image.save(path)
    with Image.open(path) as reread:
        assert reread.mode == mode
    pixels, resized = decode_image(path, None)  # (1, 4, 3) uint8
    assert not resized and pixels.dtype == np.uint8
    assert pixels[..., 0].tolist() == expected and (pixels[..., 1:] == pixels[..., :1]).all()


def test_the_size_suggested_for_mixed_sizes_is_the_common_one(tmp_path):
    small_folder(tmp_path / "images", size=32, count=3)
    odd = np.zeros((400, 400, 3), dtype=np.uint8)  # one big photo among 32-pixel ones
    Image.fromarray(odd).save(tmp_path / "images" / "train" / "cat" / "zz_photo.png")
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path / "images")
    message = str(error.value)
    assert "zz_photo.png is 400x400" in message
    assert "image_size=32" in message and "--image-size 32" in message
    assert "image_size=400" not in message


def test_a_size_that_needs_more_memory_than_the_machine_has_is_refused(tmp_path, monkeypatch):
    small_folder(tmp_path / "images")
    machine = {"SC_PHYS_PAGES": 2**18, "SC_PAGE_SIZE": 4096}  # 1 GiB of memory
    monkeypatch.setattr(os, "sysconf", lambda name: machine[name])

    def no_decoding(*args):
        raise AssertionError("decoded an image before checking the memory")

    monkeypatch.setattr(image_folder, "decode_image", no_decoding)
    with pytest.raises(DataError) as error:  # 8 images of 8192x8192: 1.5 GiB
        load_image_folder(tmp_path / "images", image_size=8192)
    message = str(error.value)
    assert "8 images of 8192x8192 pixels need 1.5 GiB" in message
    assert "1.0 GiB of memory" in message and "smaller image_size" in message
    assert "e.g. 4728" in message  # 8 x 3 x 4728 x 4728 bytes fit in half of it


def test_the_download_is_refused_too_before_it_is_resized(tmp_path, monkeypatch):
    import torchvision.datasets

    class TenImages:  # stands in for torchvision's CIFAR10: no network here
        def __init__(self, root, train, download):
            self.data = np.zeros((10, 32, 32, 3), dtype=np.uint8)  # (N, H, W, 3)
            self.targets, self.classes = [0] * 10, ["airplane"]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", TenImages)
    machine = {"SC_PHYS_PAGES": 2**18, "SC_PAGE_SIZE": 4096}  # 1 GiB of memory
    monkeypatch.setattr(os, "sysconf", lambda name: machine[name])
    with pytest.raises(DataError, match=r"cifar10: 20 images of 8192x8192 pixels need 3\.8 GiB"):
        load_cifar10("cifar10", image_size=8192)


def test_links_that_loop_load_within_seconds_and_are_noted(tmp_path):
    small_folder(tmp_path / "images")
    for folder in ("train/photos", "test/gray", "train/gray"):
        (tmp_path / "images" / folder).mkdir()
    for folder in ("train/photos", "test/gray", "train/gray"):
        pixels = np.full((8, 8, 3), 9, dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / folder / "0000.png")
    (tmp_path / "images" / "train" / "photos" / "loop").symlink_to("../..")
    (tmp_path / "images" / "test" / "gray" / "loop").symlink_to("../../train")
    script = textwrap.dedent(
        f"""
        import warnings
        from vqvae_lite.data import load_cifar10, load_image_folder
        warnings.simplefilter("ignore")
        splits = load_image_folder({str(tmp_path / "images")!r})
        print(len(splits.train), len(splits.test))
        print(splits.notes)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    counts, notes = run.stdout.splitlines()
    assert counts == "6 5"
    assert "left out 2 entries" in notes
    assert "train/photos/loop" in notes and "test/gray/loop" in notes
