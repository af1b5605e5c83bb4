"""The cache of decoded images (chapter 0's `vqvae_lite.image_cache`): an edit that keeps a
file's size and time is seen, a full disk is a warning that leaves no partial file, a killed
write's leftover goes with the next write, and two processes on a cold cache decode once."""

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from file_order import in_file_order
from PIL import Image

from vqvae_lite.data import load_image_folder
from vqvae_lite.image_cache import CACHE_ENV
from vqvae_lite.image_folder import DataWarning


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def small_folder(root, count=2, suffix=".png"):
    """root/{train,test}/{cat,dog}/NNNN.png of random 8x8 RGB pixels."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}{suffix}")


def test_an_edit_that_keeps_the_size_and_the_time_is_read_again(tmp_path):
    small_folder(tmp_path / "images", suffix=".bmp")  # uncompressed: new pixels, same size
    path = tmp_path / "images" / "train" / "cat" / "0000.bmp"
    load_image_folder(tmp_path / "images")
    before = path.stat()
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    splits = in_file_order(load_image_folder(tmp_path / "images"))
    assert (splits.train[0] == 200).all(), "the cache answered with the old pixels"


def no_partial_files(cache):
    return [p.name for p in cache.iterdir() if "partial" in p.name] == []


def test_a_full_disk_is_a_warning_and_leaves_no_partial_file(tmp_path, monkeypatch):
    small_folder(tmp_path / "images")
    real_save = torch.save

    def full_disk(contents, file):
        real_save({"a start": torch.zeros(100)}, file)  # some bytes reach the disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704")

    monkeypatch.setattr(torch, "save", full_disk)  # what torch.save raises on a full disk
    with pytest.warns(DataWarning, match="could not save the cache file"):
        splits = load_image_folder(tmp_path / "images")
    assert splits.train.shape == (4, 3, 8, 8)
    assert no_partial_files(tmp_path / "cache")
    assert list((tmp_path / "cache").glob("images-*.pt")) == []


def test_a_rename_on_a_full_disk_is_a_warning_and_leaves_no_partial_file(tmp_path, monkeypatch):
    small_folder(tmp_path / "images")

    def no_room(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_room)
    with pytest.warns(DataWarning, match="could not save the cache file .*No space left"):
        load_image_folder(tmp_path / "images")
    assert no_partial_files(tmp_path / "cache")


def test_a_partial_file_of_a_killed_write_goes_with_the_next_write(tmp_path):
    small_folder(tmp_path / "images")
    load_image_folder(tmp_path / "images")
    (cached,) = (tmp_path / "cache").glob("images-*.pt")
    cached.unlink()
    leftover = cached.with_name(f".{cached.name}.4242.partial")  # its writer was killed
    leftover.write_bytes(b"\0" * 1000)
    load_image_folder(tmp_path / "images")
    assert cached.is_file() and not leftover.exists()


LOAD_AND_COUNT = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from pathlib import Path
    from vqvae_lite import data, image_folder

    folder, ready, other = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    decodes, decode = [], image_folder.decode_image

    def slow_decode(path, size):
        decodes.append(path)
        time.sleep(0.1)  # long enough for the other process to arrive
        return decode(path, size)

    image_folder.decode_image = slow_decode
    ready.touch()
    while not other.exists():  # both processes start loading together
        time.sleep(0.01)
    splits = data.load_image_folder(folder)
    digest = hashlib.sha256(splits.train.numpy().tobytes() + splits.test.numpy().tobytes())
    print(json.dumps({"decodes": len(decodes), "sha256": digest.hexdigest()}))
    """
)


def test_two_processes_on_a_cold_cache_decode_once_and_get_the_same_tensors(tmp_path):
    small_folder(tmp_path / "images", count=3)  # 12 images
    flags = [tmp_path / "ready-0", tmp_path / "ready-1"]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_COUNT, str(tmp_path / "images"), *flags[:: 1 - 2 * i]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,  # the package as installed, not a folder named like it
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert sorted(result["decodes"] for result in results) == [0, 12]
    assert results[0]["sha256"] == results[1]["sha256"]
    waiting = [stderr for stdout, stderr in outputs if '"decodes": 0' in stdout]
    assert waiting[0].count("waiting for another process decoding") == 1
    digest = hashlib.sha256()
    splits = load_image_folder(tmp_path / "images")
    digest.update(splits.train.numpy().tobytes() + splits.test.numpy().tobytes())
    assert results[0]["sha256"] == digest.hexdigest()
