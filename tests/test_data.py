"""Data loading (chapter 0's module, used by chapter 6): image folders and archives decoded once
and cached, the offline CIFAR-10 copy, resident shuffled batches, the variance on the training
scale, and the error that says where it looked when there is no data."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from vqvae_lite import data
from vqvae_lite.data import (
    DATA_ENV,
    ResidentBatches,
    find_offline_copy,
    load_cifar10,
    load_image_folder,
    to_training_scale,
    training_variance,
)

CLASSES = ["cat", "dog"]


def make_folder(root, per_class=(3, 2), size=8, seed=0):
    """A tiny image folder root/{train,test}/<class>/*.png; returns its pixels as (N, H, W, 3)."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, count in zip(("train", "test"), per_class, strict=True):
        images = []
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / name / f"{i:04d}.png")  # lossless
                images.append(image)
        pixels[split] = np.stack(images)
    return pixels


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test decodes into its own cache folder and sees no data variable."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_ENV, raising=False)


def test_image_folder_is_decoded_exactly_with_labels(tmp_path):
    pixels = make_folder(tmp_path / "images")
    splits = load_image_folder(tmp_path / "images")
    assert splits.classes == CLASSES
    assert splits.train.dtype == torch.uint8 and splits.train.shape == (6, 3, 8, 8)
    assert splits.test.shape == (4, 3, 8, 8)
    assert torch.equal(splits.train, torch.from_numpy(pixels["train"]).permute(0, 3, 1, 2))
    assert torch.equal(splits.test, torch.from_numpy(pixels["test"]).permute(0, 3, 1, 2))
    assert splits.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert splits.test_labels.tolist() == [0, 0, 1, 1]


def test_decoding_happens_once_then_the_cache_answers(tmp_path, monkeypatch):
    make_folder(tmp_path / "images")
    first = load_image_folder(tmp_path / "images")
    assert len(list((tmp_path / "cache").glob("folder-*.pt"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_read_folder", no_decoding)
    second = load_image_folder(tmp_path / "images")
    assert torch.equal(first.train, second.train) and torch.equal(first.test, second.test)


def test_an_archive_of_a_folder_is_read_like_the_folder(tmp_path):
    make_folder(tmp_path / "images")
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "images", arcname="images")
    from_folder = load_image_folder(tmp_path / "images")
    from_archive = load_image_folder(archive)
    assert torch.equal(from_folder.train, from_archive.train)
    assert torch.equal(from_folder.test_labels, from_archive.test_labels)


def test_the_argument_and_the_environment_variable_point_at_data(tmp_path, monkeypatch):
    pixels = make_folder(tmp_path / "images")
    assert len(load_cifar10(tmp_path / "images").train) == len(pixels["train"])
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "images"))
    assert len(load_cifar10().test) == len(pixels["test"])


def test_no_data_is_an_error_that_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no shared/data above a temporary folder

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(data, "download_cifar10", offline)
    with pytest.raises(FileNotFoundError) as error:
        load_cifar10()
    message = str(error.value)
    for clue in (DATA_ENV, "data=", "shared/data/cifar10-jpeg.tar.gz", "no network"):
        assert clue in message, f"the error does not mention {clue!r}:\n{message}"


def test_a_missing_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")


def test_a_folder_without_splits_is_an_error(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train/"):
        load_image_folder(tmp_path / "images")


def test_resident_batches_are_epochs_of_shuffled_slices_that_resume():
    n, batch_size = 10, 3
    ids = torch.arange(n, dtype=torch.uint8)
    images = ids.view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()  # image i holds pixel value i
    batches = ResidentBatches(images, batch_size, seed=0)

    def ids_of(batch):
        assert batch.shape == (batch_size, 3, 4, 4) and batch.dtype == torch.float32
        assert batch.is_contiguous(memory_format=torch.channels_last)
        return ((batch[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()  # back to [0, 255]

    epochs = [[], []]
    for _ in range(2 * (n // batch_size)):
        batch = next(batches)  # a batch that starts a new epoch increments the count first
        epochs[batches.epoch].extend(ids_of(batch))
    for seen in epochs:
        assert len(seen) == len(set(seen)) == (n // batch_size) * batch_size  # no repeats
    assert epochs[0] != epochs[1]  # reshuffled

    state = batches.state_dict()
    expected = [ids_of(next(batches)) for _ in range(5)]
    again = ResidentBatches(images, batch_size, seed=123)
    again.load_state_dict(state)
    assert [ids_of(next(again)) for _ in range(5)] == expected


def test_variance_is_measured_on_the_training_scale():
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    on_training_scale = to_training_scale(images).double().var(unbiased=False).item()
    on_unit_scale = (images.double() / 255).var(unbiased=False).item()
    assert training_variance(images) == pytest.approx(on_training_scale, rel=1e-9)
    assert training_variance(images) == pytest.approx(4 * on_unit_scale, rel=1e-6)  # bug 4


@pytest.mark.skipif(find_offline_copy() is None, reason="no shared/data/cifar10-jpeg.tar.gz")
def test_the_offline_cifar10_copy(monkeypatch):
    monkeypatch.delenv(data.CACHE_ENV)  # the shared copy is decoded once into the usual cache
    splits = load_cifar10()
    assert splits.train.shape == (50_000, 3, 32, 32) and splits.train.dtype == torch.uint8
    assert splits.test.shape == (10_000, 3, 32, 32)
    assert len(splits.classes) == 10 and splits.classes[0] == "airplane"
    assert torch.bincount(splits.test_labels).tolist() == [1000] * 10
    # The copy's README: pixel variance 0.0627 on [0, 1], so about 4x that on [-1, 1].
    assert training_variance(splits.train) == pytest.approx(4 * 0.0627, abs=4e-4)
