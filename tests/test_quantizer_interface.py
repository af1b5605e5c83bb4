"""One interface for every quantiser: a new one is one class and one registry line.

The quantiser below (a fixed random codebook, no learning at all) is written here, outside the
package, registered, trained for two steps through the Python API and round-tripped through a
checkpoint, with no file of the package touched.
"""

from dataclasses import replace

import torch
from torch import Tensor

from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import (
    QUANTIZERS,
    Quantized,
    Quantizer,
    check_indices,
    check_latents,
    register_quantizer,
    registered_quantizers,
    straight_through,
)
from vqvae_lite.train import load_model, train
from vqvae_lite.train_config import TrainConfig


@register_quantizer("fixed-random")
class FixedRandomCodebook(Quantizer):
    """K random codes that never move; nearest code by brute force, no loss terms."""

    def __init__(self, num_codes: int, dim: int, scale: float = 1.0):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        generator = torch.Generator().manual_seed(1234)
        self.register_buffer("codebook", scale * torch.randn(num_codes, dim, generator=generator))

    def forward(self, z_e: Tensor) -> Quantized:
        check_latents(z_e, self.dim)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.dim)  # (B*H*W, D)
        indices = torch.cdist(flat.float(), self.codebook).argmin(dim=1)
        b, _, h, w = z_e.shape
        indices = indices.view(b, h, w)
        return Quantized(straight_through(z_e, self.decode(indices).to(z_e.dtype)), indices, {})

    def decode(self, indices: Tensor) -> Tensor:
        check_indices(indices, self.num_codes)
        return self.codebook[indices].permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)


def tiny_splits():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=generator)
    labels = torch.zeros(40, dtype=torch.int64)
    from vqvae_lite.image_folder import ImageSplits

    return ImageSplits(images[:32], images[32:], labels[:32], labels[32:], ["noise"], "tiny")


def test_a_new_quantizer_trains_and_round_trips_a_checkpoint(tmp_path):
    assert QUANTIZERS["fixed-random"] is FixedRandomCodebook
    model_config = ModelConfig(
        hidden=16,
        residual_hidden=8,
        embedding_dim=4,
        num_codes=16,
        quantizer="fixed-random",
        quantizer_options={"scale": 0.5},
    )
    config = TrainConfig(steps=2, batch_size=8, warmup_steps=1, log_every=1, device="cpu")
    result = train(model_config, config, tiny_splits(), out=tmp_path)
    assert result.steps == 2 and len(result.history) == 2
    assert "codes_used" in result.history[-1] and result.test["codes_used"] >= 1
    assert torch.equal(result.model.quantizer.codebook, FixedRandomCodebook(16, 4, 0.5).codebook)
    loaded, _ = load_model(tmp_path / "checkpoint.pt")
    assert isinstance(loaded.quantizer, FixedRandomCodebook)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x).x_hat, result.model.eval()(x).x_hat)
    grid = torch.randint(16, (2, 4, 4))
    assert loaded.decode_indices(grid).shape == (2, 3, 16, 16)
    resumed = train(model_config, replace(config, steps=3), tiny_splits(), tmp_path, resume=True)
    assert resumed.steps == 3


SMALL_OPTIONS = {"fsq": {"levels": [4, 4]}}  # FSQ's 16 codes: a grid of 4 x 4 levels


def test_every_registered_quantizer_answers_the_interface():
    for name in sorted(registered_quantizers()):
        torch.manual_seed(0)
        sizes = dict(hidden=16, residual_hidden=8, embedding_dim=4, num_codes=16)
        options = SMALL_OPTIONS.get(name, {})
        model = VQVAE(ModelConfig(**sizes, quantizer=name, quantizer_options=options))
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        out = model(x)
        assert out.z_q.shape == out.z_e.shape == (2, 4, 4, 4), name
        assert out.indices.shape == (2, 4, 4) and out.indices.dtype == torch.int64, name
        assert all(v.dim() == 0 for v in out.losses.values()), name
        assert model.quantizer.decode(out.indices).shape == (2, 4, 4, 4), name
        assert model.quantizer.upkeep(out.z_e.detach(), out.indices) >= 0, name
        counts = torch.bincount(out.indices.flatten(), minlength=model.quantizer.num_codes)
        per_stage = model.quantizer.stage_counts(counts)  # (stages, codes per stage)
        assert per_stage.dim() == 2 and (per_stage.sum(dim=1) == counts.sum()).all(), name
        (out.x_hat.square().mean() + sum(out.losses.values())).backward()
        assert model.encoder.conv1.weight.grad.abs().sum() > 0, f"{name}: no encoder gradient"
