"""Chapter 7's codebook upkeep: the EMA update, dead-code restarts, k-means init, state dicts.

Each test breaks if the mechanism it names is broken: the EMA formula (decay, bias correction,
Laplace smoothing), the order "quantise, then update", buffers instead of parameters, no update
in eval mode, restarts that touch only the dead codes, and k-means that actually clusters.
"""

import io
from fractions import Fraction

import pytest
import torch

from vqvae_lite.codebook import nearest_codes
from vqvae_lite.codebook_upkeep import (
    EMAQuantizerWithUpkeep,
    kmeans,
    restart_dead_codes,
    variants,
)
from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.losses import vqvae_loss
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import QUANTIZERS, VectorQuantizer

SMALL = dict(hidden=16, residual_hidden=8, embedding_dim=4, num_codes=16)


def as_latents(vectors: list[list[float]]) -> torch.Tensor:
    """N vectors of length D -> latents (1, D, 1, N) that flatten back to them, in order."""
    return torch.tensor(vectors).t().reshape(1, len(vectors[0]), 1, len(vectors))


def quantizing_error(z: torch.Tensor, codebook: torch.Tensor) -> float:
    return (z - codebook[nearest_codes(z, codebook)]).square().sum(dim=1).mean().item()


def test_ema_update_equals_the_formula_on_a_hand_computed_example():
    quantizer = EMAVectorQuantizer(num_codes=3, dim=2, decay=0.75, epsilon=0.1)
    quantizer.codebook.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0], [-5.0, -5.0]]))
    # Step 1: [1, 0] and [3, 0] pick code 0, [0, 2] picks code 1; code 2 is unused.
    # Hidden N = 1/4 [2, 1, 0], corrected by 1 - 3/4 -> [2, 1, 0]; n = 3;
    # Laplace: ([2, 1, 0] + 0.1) / 3.3 * 3 = [21/11, 1, 1/11]; e = corrected sums / that.
    first = quantizer(as_latents([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]))
    assert first.indices.flatten().tolist() == [0, 0, 1]
    expected = [[Fraction(4) / Fraction(21, 11), 0], [0, 2], [0, 0]]
    torch.testing.assert_close(quantizer.codebook, torch.tensor(expected, dtype=torch.float32))
    # Step 2: [-1, -1] picks code 2. Hidden N = 3/4 [1/2, 1/4, 0] + 1/4 [0, 0, 1]
    # = [3/8, 3/16, 1/4]; hidden sums = [[3/4, 0], [0, 3/8], [-1/4, -1/4]];
    # corrected by 1 - (3/4)^2 = 7/16: N = [6/7, 3/7, 4/7], sums = [[12/7, 0], [0, 6/7],
    # [-4/7, -4/7]]; n = 13/7, so Laplace multiplies N + 0.1 by (13/7) / (13/7 + 0.3) = 130/151.
    second = quantizer(as_latents([[-1.0, -1.0]]))
    assert second.indices.flatten().tolist() == [2]
    size = [(Fraction(k, 7) + Fraction(1, 10)) * Fraction(130, 151) for k in (6, 3, 4)]
    expected = [
        [Fraction(12, 7) / size[0], 0],
        [0, Fraction(6, 7) / size[1]],
        [-Fraction(4, 7) / size[2], -Fraction(4, 7) / size[2]],
    ]
    torch.testing.assert_close(quantizer.codebook, torch.tensor(expected, dtype=torch.float32))
    assert quantizer.ema_steps.item() == 2
    torch.testing.assert_close(quantizer.ema_cluster_size, torch.tensor([3 / 8, 3 / 16, 1 / 4]))
    torch.testing.assert_close(
        quantizer.ema_sums, torch.tensor([[3 / 4, 0.0], [0.0, 3 / 8], [-1 / 4, -1 / 4]])
    )


def test_ema_quantises_with_the_codebook_from_before_the_update():
    quantizer = EMAVectorQuantizer(num_codes=3, dim=2, decay=0.5, epsilon=0.1)
    before = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-5.0, -5.0]])
    quantizer.codebook.copy_(before)
    out = quantizer(as_latents([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]))
    codes = out.z_q.permute(0, 2, 3, 1).reshape(-1, 2)  # (1, D, 1, N) -> (N, D)
    assert torch.equal(codes, before[[0, 0, 1]])  # the old codes, not the updated ones
    assert not torch.equal(quantizer.codebook, before)  # and the update did happen afterwards


def test_ema_state_is_in_buffers_never_in_the_parameters():
    model = VQVAE(ModelConfig(quantizer="ema", quantizer_options={"decay": 0.9}, **SMALL))
    assert QUANTIZERS["ema"] is EMAQuantizerWithUpkeep
    assert model.quantizer.decay == 0.9
    parameters = dict(model.named_parameters())
    assert not [name for name in parameters if name.startswith("quantizer.")]
    buffers = dict(model.named_buffers())
    for name in ("codebook", "ema_cluster_size", "ema_sums", "ema_steps"):
        assert f"quantizer.{name}" in buffers
        assert f"quantizer.{name}" in model.state_dict()
    pointers = {p.data_ptr() for p in model.parameters()}
    assert not pointers & {b.data_ptr() for b in model.quantizer.buffers()}


def test_a_gradient_codebook_is_a_parameter_and_ema_drops_only_the_codebook_term():
    assert "quantizer.codebook" in dict(VQVAE(ModelConfig(**SMALL)).named_parameters())
    model = VQVAE(ModelConfig(quantizer="ema", **SMALL))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = model(x)
    assert sorted(out.losses) == ["commitment"]
    flat = out.z_e.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    codes = out.z_q.detach().permute(0, 2, 3, 1).reshape(-1, 4)  # codes before the update
    torch.testing.assert_close(out.losses["commitment"], 0.25 * (flat - codes).square().mean())
    terms = vqvae_loss(out.x_hat, x, out.losses, 1.0)
    torch.testing.assert_close(terms.total, terms.reconstruction + out.losses["commitment"])


def test_eval_mode_leaves_the_codebook_and_its_averages_untouched():
    torch.manual_seed(0)
    model = VQVAE(ModelConfig(quantizer="ema", **SMALL))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model.train()
    model(x)  # one training step so that the averages are not all zero
    before = {name: b.clone() for name, b in model.quantizer.named_buffers()}
    model.eval()
    model(x)
    for name, buffer in model.quantizer.named_buffers():
        assert torch.equal(buffer, before[name]), f"{name} changed in eval mode"
    model.train()
    model(x)
    assert not torch.equal(model.quantizer.codebook, before["codebook"])  # training does update


@pytest.mark.parametrize("kind", ["gradient", "ema"])
def test_a_restart_replaces_exactly_the_dead_codes(kind):
    torch.manual_seed(0)
    quantizer = VectorQuantizer(8, 3) if kind == "gradient" else EMAVectorQuantizer(8, 3)
    if kind == "ema":
        quantizer(torch.randn(2, 3, 4, 4))  # one update: codes now come from the averages
    before = quantizer.codebook.detach().clone()
    dead = torch.tensor([True, False, False, True, False, True, False, False])
    flat = torch.randn(20, 3)
    restarted = restart_dead_codes(quantizer, dead, flat, torch.Generator().manual_seed(1))
    after = quantizer.codebook.detach()
    assert restarted == 3
    assert torch.equal(after[~dead], before[~dead])  # the living codes are untouched
    is_row = (after[dead][:, None, :] == flat[None]).all(dim=2)  # (3, 20)
    assert is_row.any(dim=1).all()  # every restarted code is one of the encoder outputs
    assert len(set(is_row.float().argmax(dim=1).tolist())) == 3  # and they are all different
    assert restart_dead_codes(quantizer, torch.zeros(8, dtype=torch.bool), flat, None) == 0
    three = flat[:3]  # as many outputs as dead codes: the restart must use each one once
    restart_dead_codes(quantizer, dead, three, torch.Generator().manual_seed(2))
    placed = sorted(quantizer.codebook.detach()[dead].tolist())
    assert placed == sorted(three.tolist())


def test_restarted_ema_codes_stay_where_they_were_put():
    torch.manual_seed(0)
    quantizer = EMAVectorQuantizer(4, 2, decay=0.99)
    quantizer.codebook.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [9.0, 9.0], [-9.0, 9.0]]))
    batch = as_latents([[1.1, 0.9], [-0.9, -1.1]] * 8)
    for _ in range(5):
        quantizer(batch)  # codes 2 and 3 are never picked: they sit at zero
    dead = torch.tensor([False, False, True, True])
    targets = torch.tensor([[5.0, 5.0], [-5.0, 5.0]])
    restart_dead_codes(quantizer, dead, targets, torch.Generator().manual_seed(0))
    placed = quantizer.codebook[dead].clone()
    quantizer(batch)  # an update in which the restarted codes are still unused
    torch.testing.assert_close(quantizer.codebook[dead], placed, rtol=1e-4, atol=1e-4)
    assert placed.abs().min() == 5.0


def test_kmeans_init_lowers_the_quantisation_error_of_a_fixed_batch():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(32, 8, generator=generator) * 3
    z = centres[torch.randint(32, (2048,), generator=generator)]
    z = z + 0.3 * torch.randn(2048, 8, generator=generator)  # (2048, 8) in 32 blobs
    random_init = VectorQuantizer(32, 8).codebook.detach()
    random_rows = kmeans(z, 32, iterations=0)
    fitted = kmeans(z, 32, iterations=10)
    errors = [quantizing_error(z, c) for c in (random_init, random_rows, fitted)]
    assert errors[2] < 0.8 * errors[1] < 0.8 * errors[0]
    with pytest.raises(ValueError, match="at least 32 vectors"):
        kmeans(z[:10], 32)


@pytest.mark.parametrize("kind", ["vq-upkeep", "ema"])
def test_kmeans_initialize_sets_the_codebook_and_survives_the_first_ema_update(kind):
    torch.manual_seed(0)
    quantizer = QUANTIZERS[kind](num_codes=16, dim=4, kmeans_init=True)
    z = torch.randn(512, 4)
    torch.manual_seed(1)
    quantizer.initialize(lambda: z)
    fitted = quantizer.codebook.detach().clone()
    torch.manual_seed(1)
    assert torch.equal(fitted, kmeans(z, 16, seed=int(torch.randint(2**31, ()))))
    if kind == "ema":
        out = quantizer(as_latents(z[:1].tolist()))  # one vector: 15 codes go unused
        unused = torch.arange(16) != out.indices.item()
        torch.testing.assert_close(quantizer.codebook[unused], fitted[unused])


def flat_latents(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """Encoder outputs of images x as rows: (B, D, h, w) -> (B*h*w, D)."""
    return model.encode(x).detach().permute(0, 2, 3, 1).reshape(-1, model.config.embedding_dim)


def restart_every_third(model: VQVAE, x: torch.Tensor) -> None:
    dead = torch.arange(model.config.num_codes) % 3 == 0
    restart_dead_codes(model.quantizer, dead, flat_latents(model, x), torch.Generator())


@pytest.mark.parametrize("variant", list(variants(restart_dead_after=1)))
def test_state_dicts_round_trip_for_every_variant(variant):
    torch.manual_seed(0)
    config = variants(restart_dead_after=1)[variant]
    config = ModelConfig(
        quantizer=config.quantizer, quantizer_options=config.quantizer_options, **SMALL
    )
    model = VQVAE(config)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        model.quantizer.initialize(lambda: flat_latents(model, x))
        out = model(x)  # a training-mode forward: moves the EMA state
        model.quantizer.upkeep(out.z_e, out.indices)  # restarts fire after one unused step
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    copy = VQVAE(config)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after the round trip"
    with torch.no_grad():
        a, b = model(x), copy(x)  # the next training step continues identically
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.indices, b.indices)
    assert torch.equal(model.quantizer.codebook, copy.quantizer.codebook)
    with torch.no_grad():  # the restart generator's state came back too
        model.quantizer.upkeep(a.z_e, a.indices), copy.quantizer.upkeep(b.z_e, b.indices)
    assert torch.equal(model.quantizer.codebook, copy.quantizer.codebook)


@pytest.mark.parametrize("kind", ["vq-upkeep", "ema"])
def test_upkeep_counts_unused_steps_and_restarts_after_the_threshold(kind):
    torch.manual_seed(0)
    quantizer = QUANTIZERS[kind](num_codes=8, dim=2, restart_dead_after=3)
    z_e = as_latents([[1.0, 1.0]] * 4)
    indices = torch.zeros(1, 1, 4, dtype=torch.int64)  # only code 0 is ever used
    assert [quantizer.upkeep(z_e, indices) for _ in range(4)] == [0, 0, 7, 0]
    assert quantizer.unused_for.tolist() == [0] + [1] * 7
    plain = QUANTIZERS[kind](num_codes=8, dim=2)  # restart_dead_after=0: never
    assert sum(plain.upkeep(z_e, indices) for _ in range(5)) == 0
    with pytest.raises(ValueError, match="restart_dead_after must be >= 0"):
        QUANTIZERS[kind](num_codes=8, dim=2, restart_dead_after=-1)
