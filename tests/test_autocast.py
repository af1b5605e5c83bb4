"""Mixed precision: under bf16 autocast (CPU autocast follows the casting rules of CUDA's),
the lookup, the EMA statistics and the losses must still run in float32, so that a training
step on a GPU picks exactly the codes that float32 picks."""

import copy

import pytest
import torch

from vqvae_lite.codebook import nearest_codes, squared_distances
from vqvae_lite.loop import training_step
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import VectorQuantizer
from vqvae_lite.run_state import Run
from vqvae_lite.train import VQVAETask
from vqvae_lite.train_config import TrainConfig


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture
def hard_lookup():
    """The issue's case: z (2048, 64) ~ N(0, 1), codebook (512, 64) ~ N(0, 0.01)."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2048, 64, generator=generator)
    codebook = 0.1 * torch.randn(512, 64, generator=generator)
    return z, codebook


def test_bare_addmm_under_autocast_is_bf16_and_picks_wrong_codes(hard_lookup):
    """The failure being guarded against: .float() does not survive autocast."""
    z, codebook = hard_lookup
    with bf16_autocast():
        d = torch.addmm(
            z.square().sum(1, keepdim=True) + codebook.square().sum(1),
            z.float(),
            codebook.float().t(),
            alpha=-2.0,
        )
    assert d.dtype == torch.bfloat16
    assert (d.argmin(1) != squared_distances(z, codebook).argmin(1)).sum() > 100


def test_distances_stay_float32_under_autocast(hard_lookup):
    z, codebook = hard_lookup
    exact = nearest_codes(z, codebook)
    with bf16_autocast():
        d = squared_distances(z, codebook)
        indices = nearest_codes(z, codebook)
    assert d.dtype == torch.float32
    assert torch.equal(indices, exact)


def test_quantizer_indices_and_losses_under_autocast(hard_lookup):
    z, codebook = hard_lookup
    quantizer = VectorQuantizer(512, 64)
    quantizer.codebook.data.copy_(codebook)
    z_e = z.view(32, 8, 8, 64).permute(0, 3, 1, 2)  # (2048, 64) -> (32, 64, 8, 8)
    exact = quantizer(z_e)
    with bf16_autocast():
        mixed = quantizer(z_e)
    assert torch.equal(mixed.indices, exact.indices)
    for name, value in mixed.losses.items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, exact.losses[name])


@pytest.mark.parametrize("quantizer", ["vq", "ema"])
def test_training_step_under_autocast_picks_the_float32_codes(quantizer):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    splits = type("Splits", (), {"train": images, "test": images[:32]})
    config = TrainConfig(steps=1, batch_size=64, device="cpu")
    task = VQVAETask(ModelConfig(quantizer=quantizer), config, splits)
    with torch.no_grad():  # codes at encoder outputs, so that many codes compete
        z = task.sample_encodings(8)  # (8*8*8, 64)
        task.model.quantizer.codebook.copy_(z[:512] + 0.01 * torch.randn_like(z[:512]))
    before = copy.deepcopy(task.model.quantizer)
    run = Run(task, config, torch.optim.Adam(task.model.parameters(), lr=1e-3))
    with bf16_autocast():
        step = training_step(run, next(task.batches), torch.device("cpu"))
    output = step.output
    assert output.x_hat.dtype == torch.bfloat16  # autocast was really on
    assert step.loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in step.logs.values() if v.is_floating_point())
    flat = output.z_e.detach().float().permute(0, 2, 3, 1).reshape(-1, 64)  # (B*8*8, 64)
    assert torch.equal(output.indices.flatten(), nearest_codes(flat, before.codebook))
    if quantizer == "ema":  # the EMA update equals the float32 update from the same batch
        before.ema_update(flat, output.indices.flatten())
        assert torch.equal(task.model.quantizer.codebook, before.codebook)
        assert torch.equal(task.model.quantizer.ema_sums, before.ema_sums)


def test_model_forward_under_autocast_matches_float32_codes():
    torch.manual_seed(0)
    model = VQVAE(ModelConfig()).eval()
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        flat = model.encode(x).permute(0, 2, 3, 1).reshape(-1, 64)
        model.quantizer.codebook.copy_(flat[:512])
        with bf16_autocast():
            output = model(x)
    z = output.z_e.float().permute(0, 2, 3, 1).reshape(-1, 64)
    assert torch.equal(output.indices.flatten(), nearest_codes(z, model.quantizer.codebook))
