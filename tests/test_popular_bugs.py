"""The appendix of popular bugs (`notebooks/12_popular_bugs.ipynb`): each mistake, re-introduced
on purpose, is caught by the test that the appendix names.

For the mistakes that already have a test in another file, the test here puts the mistake back
(by monkeypatching the package, undone after the test) and checks that the named test then
fails. The fresh-iterator mistake gets its own test, which also runs its check on batches drawn
the buggy way and asserts that the check flags them.
"""

import pytest
import test_autocast as autocast_tests
import test_codebook_upkeep as upkeep_tests
import test_model as model_tests
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vqvae_lite.codebook
from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.encoder import ResidualLayer, ResidualStack
from vqvae_lite.loop import fit
from vqvae_lite.model import ModelConfig
from vqvae_lite.quantizer import (
    Quantized,
    VectorQuantizer,
    codebook_loss,
    commitment_loss,
    straight_through,
)
from vqvae_lite.train import VQVAETask
from vqvae_lite.train_config import TrainConfig


def test_swapped_terms_test_fails_on_swapped_terms(monkeypatch):
    def swapped(self, z_e):  # MishaLaskin/vqvae: beta on the codebook term
        codes, indices = self.lookup(z_e)
        losses = {
            "codebook": self.beta * codebook_loss(z_e, codes),
            "commitment": commitment_loss(z_e, codes),
        }
        return Quantized(straight_through(z_e, codes), indices, losses)

    model_tests.test_swapped_terms_each_term_moves_only_its_side_and_beta_weights_commitment()
    monkeypatch.setattr(VectorQuantizer, "forward", swapped)
    with pytest.raises(AssertionError):
        model_tests.test_swapped_terms_each_term_moves_only_its_side_and_beta_weights_commitment()


def test_shared_layers_test_fails_on_a_repeated_layer(monkeypatch):
    def repeated(self, channels, hidden, layers):  # [ResidualLayer(...)] * n
        nn.Module.__init__(self)
        self.layers = nn.ModuleList([ResidualLayer(channels, hidden)] * layers)

    model_tests.test_shared_layers_residual_layers_are_distinct_modules()
    monkeypatch.setattr(ResidualStack, "__init__", repeated)
    with pytest.raises(AssertionError):
        model_tests.test_shared_layers_residual_layers_are_distinct_modules()


def test_inplace_relu_test_fails_on_an_inplace_relu(monkeypatch):
    original = ResidualLayer.__init__

    def inplace_first(self, channels, hidden):  # nn.ReLU(True) first in the block
        original(self, channels, hidden)
        self.block[0] = nn.ReLU(inplace=True)

    model_tests.test_inplace_relu_skip_path_carries_x_not_relu_x()
    monkeypatch.setattr(ResidualLayer, "__init__", inplace_first)
    with pytest.raises(AssertionError):
        model_tests.test_inplace_relu_skip_path_carries_x_not_relu_x()


def test_variance_scale_test_fails_on_the_unit_scale(monkeypatch):
    def on_unit_scale(images):  # np.var(images / 255.0)
        return (images.double() / 255).var(unbiased=False).item()

    model_tests.test_variance_scale_variance_is_measured_on_the_training_scale()
    monkeypatch.setattr(model_tests, "training_variance", on_unit_scale)
    with pytest.raises(AssertionError):
        model_tests.test_variance_scale_variance_is_measured_on_the_training_scale()


def test_ema_order_test_fails_when_codes_come_after_the_update(monkeypatch):
    def update_first(self, z_e):  # zalandoresearch: gather the codes after the update
        _, indices = self.lookup(z_e)
        if self.training:
            flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B*H*W, D)
            self.ema_update(flat, indices.flatten())
        codes = self.decode(indices)
        losses = {"commitment": self.beta * commitment_loss(z_e, codes)}
        return Quantized(straight_through(z_e, codes), indices, losses)

    upkeep_tests.test_ema_quantises_with_the_codebook_from_before_the_update()
    monkeypatch.setattr(EMAVectorQuantizer, "forward", update_first)
    with pytest.raises(AssertionError):
        upkeep_tests.test_ema_quantises_with_the_codebook_from_before_the_update()


def test_ema_buffers_test_fails_when_averages_are_parameters(monkeypatch):
    original = EMAVectorQuantizer.__init__

    def as_parameters(self, *args, **kwargs):  # zalandoresearch: nn.Parameter(_ema_w)
        original(self, *args, **kwargs)
        for name in ("codebook", "ema_cluster_size", "ema_sums"):
            value = getattr(self, name)
            delattr(self, name)
            setattr(self, name, nn.Parameter(value))

    upkeep_tests.test_ema_state_is_in_buffers_never_in_the_parameters()
    monkeypatch.setattr(EMAVectorQuantizer, "__init__", as_parameters)
    with pytest.raises(AssertionError):
        upkeep_tests.test_ema_state_is_in_buffers_never_in_the_parameters()


def test_bf16_test_fails_when_distances_follow_autocast(monkeypatch):
    def following_autocast(z, codebook):  # .float() alone: autocast still runs addmm in bf16
        z, codebook = z.float(), codebook.float()
        z_sq = z.square().sum(dim=1, keepdim=True)  # (N, 1)
        return torch.addmm(z_sq + codebook.square().sum(dim=1), z, codebook.t(), alpha=-2.0)

    generator = torch.Generator().manual_seed(0)  # the hard case of tests/test_autocast.py
    z = torch.randn(2048, 64, generator=generator)
    hard_lookup = z, 0.1 * torch.randn(512, 64, generator=generator)
    autocast_tests.test_distances_stay_float32_under_autocast(hard_lookup)
    monkeypatch.setattr(vqvae_lite.codebook, "squared_distances", following_autocast)
    monkeypatch.setattr(autocast_tests, "squared_distances", following_autocast)
    with pytest.raises(AssertionError):
        autocast_tests.test_distances_stay_float32_under_autocast(hard_lookup)


class FreshIterator:
    """MishaLaskin/vqvae's `next(iter(training_loader))`: every batch from a new epoch."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(
            TensorDataset(images), batch_size=batch_size, shuffle=True, generator=generator
        )
        self.epoch = 0

    def __next__(self) -> torch.Tensor:
        (batch,) = next(iter(self.loader))
        return (batch.float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)


def images_seen_in_one_epoch(change_batches=None) -> list[int]:
    """The image numbers that chapter 6's task trains on over one epoch of steps with `fit`.

    Image i holds the value i in every pixel, so each batch can be read back as numbers.
    """
    n, batch_size = 60, 6
    numbers = torch.arange(n, dtype=torch.uint8)
    images = numbers.view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()  # (N, 3, 4, 4)
    splits = type("Splits", (), {"train": images, "test": images[:batch_size]})
    small = ModelConfig(hidden=8, residual_hidden=4, embedding_dim=4, num_codes=8)
    config = TrainConfig(steps=n // batch_size, batch_size=batch_size, warmup_steps=1)
    task = VQVAETask(small, config, splits)
    if change_batches is not None:
        task.batches = change_batches(images, batch_size)
    seen, loss = [], task.loss

    def recording_loss(x):
        seen.extend(((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist())  # back to [0, 255]
        return loss(x)

    task.loss = recording_loss
    fit(task, config)
    assert len(seen) == config.steps * batch_size
    return seen


def test_fresh_iterator_one_epoch_of_steps_shows_every_image_once():
    seen = images_seen_in_one_epoch()
    assert len(set(seen)) == len(seen), "one epoch of steps must show each image once"
    buggy = images_seen_in_one_epoch(FreshIterator)  # the check, on the mistake
    assert len(set(buggy)) < len(buggy), "batches from fresh iterators repeat images"
