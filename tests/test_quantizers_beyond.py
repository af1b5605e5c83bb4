"""Chapter 9's quantisers: FSQ, the rotation trick and residual VQ, behind chapter 3's interface,
and checked against vector-quantize-pytorch where it is installed."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from vqvae_lite.fsq import FiniteScalarQuantizer, bound
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import build_quantizer, straight_through
from vqvae_lite.quantizer_variants import quantizer_variants
from vqvae_lite.residual_vq import MOST_INDICES, ResidualVQ
from vqvae_lite.rotation_trick import RotationQuantizer, rotation_trick

D = 16
CONFIGS = {  # name -> (num_codes, options) for build_quantizer and ModelConfig
    "fsq": (512, {"levels": [8, 8, 8]}),
    "fsq-4375": (4375, {"levels": [7, 5, 5, 5, 5]}),
    "rotation": (64, {"decay": 0.8, "restart_dead_after": 5}),
    "rvq": (64, {"stages": 2, "restart_dead_after": 5}),  # 64**2 indices
    "rvq-shared": (8, {"stages": 3, "shared_codebook": True}),  # 8**3 indices
}
INDICES = {"rvq": 64**2, "rvq-shared": 8**3}  # the index space, where it is not num_codes


def registered_name(name: str) -> str:
    return name.split("-")[0]


def build(name: str, dim: int = D):
    num_codes, options = CONFIGS[name]
    return build_quantizer(
        registered_name(name), num_codes=num_codes, dim=dim, beta=0.25, **options
    )


def small_residual_vq(stages: int = 2, size: int = 8, dim: int = D) -> ResidualVQ:
    """Residual VQ whose later stages have ever smaller codes, so that greedy decoding inverts."""
    rvq = ResidualVQ(size, dim, stages=stages).eval()
    generator = torch.Generator().manual_seed(0)
    for stage, codebook in enumerate(rvq.codebooks):
        codebook.codebook.copy_(torch.randn(size, dim, generator=generator) * 0.1**stage)
    return rvq


# -- indices <-> codes ---------------------------------------------------------------------


@pytest.mark.parametrize("levels", [[8, 8, 8], [7, 5, 5, 5, 5], [3, 4]])
def test_fsq_indices_round_trip_through_the_grid(levels):
    fsq = FiniteScalarQuantizer(math.prod(levels), D, levels=levels)
    every = torch.arange(fsq.num_codes)
    codes = fsq.indices_to_codes(every)  # (K, d)
    assert torch.equal(fsq.codes_to_indices(codes), every)
    assert codes.unique(dim=0).shape[0] == fsq.num_codes
    assert codes.min() >= -1 and codes.max() <= 1


@pytest.mark.parametrize("levels", [[8, 8, 8], [7, 5, 5, 5, 5]])
def test_fsq_channel_takes_exactly_its_number_of_levels(levels):
    fsq = FiniteScalarQuantizer(math.prod(levels), D, levels=levels)
    z = torch.linspace(-8, 8, 4001).unsqueeze(1).expand(-1, len(levels))
    grid = fsq.quantize(z)
    assert [grid[:, c].unique().numel() for c in range(len(levels))] == levels


def test_fsq_decode_gives_the_forward_value_of_the_same_indices():
    fsq = build("fsq")
    out = fsq(torch.randn(2, D, 4, 4) * 3)
    torch.testing.assert_close(fsq.decode(out.indices), out.z_q)
    assert out.indices.dtype == torch.int64 and out.indices.shape == (2, 4, 4)


def test_rotation_quantizer_round_trips_indices_to_codes_to_indices():
    rotation = build("rotation").eval()
    indices = torch.randint(64, (2, 4, 4))
    assert torch.equal(rotation(rotation.decode(indices)).indices, indices)


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_residual_vq_round_trips_indices_to_codes_to_indices(stages):
    rvq = small_residual_vq(stages)
    indices = torch.randint(rvq.num_codes, (2, 4, 4))
    assert torch.equal(rvq(rvq.decode(indices)).indices, indices)
    split = rvq.split(indices)
    assert split.shape == (stages, 2, 4, 4) and split.max() < 8
    assert torch.equal(rvq.combine(split), indices)


def test_residual_vq_codes_are_the_sum_of_the_stages_and_the_error_falls_per_stage():
    rvq = small_residual_vq(3)
    z = rvq.decode(torch.randint(rvq.num_codes, (2, 4, 4))) + 1e-4 * torch.randn(2, D, 4, 4)
    out = rvq(z)
    split = rvq.split(out.indices)
    stages = [rvq.codebook_of(s).decode(split[s]) for s in range(3)]
    torch.testing.assert_close(out.z_q, sum(stages))
    errors = [(z - sum(stages[: s + 1])).square().sum() for s in range(3)]
    assert errors[0] < z.square().sum() and errors[1] < errors[0] and errors[2] < errors[1]


def test_stage_counts_are_the_usage_of_each_stage():
    rvq = small_residual_vq(3, size=4)
    indices = torch.randint(rvq.num_codes, (3, 5, 5))
    counts = torch.bincount(indices.flatten(), minlength=rvq.num_codes)
    split = rvq.split(indices)
    for stage, stage_counts in enumerate(rvq.stage_counts(counts)):
        assert torch.equal(stage_counts, torch.bincount(split[stage].flatten(), minlength=4))


# -- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients_reach_the_encoder(name):
    num_codes, options = CONFIGS[name]
    torch.manual_seed(0)
    model = VQVAE(
        ModelConfig(
            hidden=16,
            residual_hidden=8,
            embedding_dim=D,
            num_codes=num_codes,
            quantizer=registered_name(name),
            quantizer_options=options,
        )
    )
    output = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    loss = output.x_hat.square().mean() + sum(output.losses.values())
    loss.backward()
    grad = model.encoder.parameters().__next__().grad
    assert grad is not None and grad.abs().sum() > 0


def test_fsq_gradient_is_that_of_the_bound_through_the_rounding():
    """Straight-through rounding: d quantize / dz = d bound / dz / floor(L/2), never zero."""
    fsq = FiniteScalarQuantizer(512, D, levels=[8, 8, 8])
    z = torch.randn(50, 3, requires_grad=True)
    fsq.quantize(z).sum().backward()
    expected = (
        torch.autograd.functional.jacobian(lambda v: bound(v, fsq._levels).sum(0), z.detach()).sum(
            0
        )
        / 4
    )
    torch.testing.assert_close(z.grad, expected)
    assert (z.grad != 0).all()


def rotation_by_hand(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """lambda R for one pair of vectors (D,), as a matrix (D, D)."""
    z_hat, e_hat = F.normalize(z, dim=0), F.normalize(e, dim=0)
    r = F.normalize(z_hat + e_hat, dim=0)
    eye = torch.eye(len(z))
    rotation = eye - 2 * torch.outer(r, r) + 2 * torch.outer(e_hat, z_hat)
    return e.norm() / z.norm() * rotation


def test_rotation_trick_forward_is_the_code_and_gradient_is_rotated():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(6, D, generator=generator, dtype=torch.float64, requires_grad=True)
    e = torch.randn(6, D, generator=generator, dtype=torch.float64)
    g = torch.randn(6, D, generator=generator, dtype=torch.float64)
    z_q = rotation_trick(z, e)
    torch.testing.assert_close(z_q, e)
    (grad,) = torch.autograd.grad(z_q, z, g)
    for i in range(6):
        matrix = rotation_by_hand(z[i].detach(), e[i])
        torch.testing.assert_close(matrix @ z[i].detach(), e[i])  # lambda R z_e = e
        torch.testing.assert_close(
            matrix.T @ matrix / (e[i].norm() / z[i].norm()) ** 2, torch.eye(D, dtype=torch.float64)
        )  # R is orthogonal
        torch.testing.assert_close(grad[i], matrix.T @ g[i])
    (copied,) = torch.autograd.grad(straight_through(z, e), z, g)
    assert not torch.allclose(grad, copied)


def test_rotation_quantizer_uses_the_rotation_for_its_gradient():
    torch.manual_seed(0)
    rotation = build("rotation").eval()
    z = torch.randn(1, D, 2, 2, requires_grad=True)
    out = rotation(z)
    g = torch.randn_like(z)
    (grad,) = torch.autograd.grad(out.z_q, z, g)
    codes = rotation.decode(out.indices)
    torch.testing.assert_close(out.z_q, codes)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, D)  # (1, D, 2, 2) -> (4, D)
    codes = codes.permute(0, 2, 3, 1).reshape(-1, D)
    g = g.permute(0, 2, 3, 1).reshape(-1, D)
    grad = grad.permute(0, 2, 3, 1).reshape(-1, D)
    for i in range(4):
        torch.testing.assert_close(grad[i], rotation_by_hand(flat[i], codes[i]).T @ g[i])


def test_rotation_quantizer_keeps_chapter_7s_ema_update_and_options():
    torch.manual_seed(0)
    rotation = build("rotation")
    assert isinstance(rotation, RotationQuantizer)
    assert rotation.decay == 0.8 and rotation.restart_dead_after == 5
    before = rotation.codebook.clone()
    rotation(torch.randn(2, D, 4, 4))
    assert int(rotation.ema_steps) == 1 and not torch.equal(before, rotation.codebook)


# -- upkeep --------------------------------------------------------------------------------


def test_residual_vq_restarts_dead_codes_onto_residuals():
    torch.manual_seed(0)
    rvq = ResidualVQ(16**2, D, stages=2, restart_dead_after=1)
    z = torch.randn(1, D, 2, 2)  # 4 positions: at most 4 codes used per stage
    out = rvq(z)
    assert rvq.upkeep(z, out.indices) >= 2 * (16 - 4)


def test_shared_codebook_is_one_codebook_updated_once_per_step():
    torch.manual_seed(0)
    rvq = build("rvq-shared")
    assert len(rvq.codebooks) == 1 and rvq.codebook_of(0) is rvq.codebook_of(2)
    rvq(torch.randn(2, D, 4, 4))
    assert int(rvq.codebooks[0].ema_steps) == 1


# -- building, saving, refusing ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_builds_from_model_config_and_survives_a_state_dict_round_trip(name):
    num_codes, options = CONFIGS[name]
    config = ModelConfig(
        hidden=16,
        residual_hidden=8,
        embedding_dim=D,
        num_codes=num_codes,
        quantizer=registered_name(name),
        quantizer_options=options,
    )
    torch.manual_seed(0)
    model = VQVAE(config)
    model.train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    model(x)  # an EMA codebook moves
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    again = VQVAE(config)
    again.load_state_dict(torch.load(buffer))
    model.eval(), again.eval()
    first, second = model(x), again(x)
    assert torch.equal(first.indices, second.indices)
    torch.testing.assert_close(first.x_hat, second.x_hat)
    assert model.quantizer.num_codes == INDICES.get(name, num_codes)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rejects_latents_of_the_wrong_shape_naming_the_expected_one(name):
    quantizer = build(name)
    with pytest.raises(ValueError, match=rf"\(B, {D}, H, W\)"):
        quantizer(torch.randn(2, D + 1, 4, 4))
    with pytest.raises(ValueError, match=rf"\(B, {D}, H, W\)"):
        quantizer(torch.randn(D, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        quantizer.decode(torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        quantizer.decode(torch.full((1, 2, 2), quantizer.num_codes))


def test_fsq_refuses_num_codes_other_than_the_product_of_its_levels():
    with pytest.raises(ValueError, match="num_codes must equal prod\\(levels\\) = 4375"):
        VQVAE(ModelConfig(quantizer="fsq", quantizer_options={"levels": [7, 5, 5, 5, 5]}))
    with pytest.raises(ValueError, match="levels must be integers >= 3"):
        FiniteScalarQuantizer(8, D, levels=[8, 1])
    with pytest.raises(ValueError, match="levels must be integers >= 3"):
        FiniteScalarQuantizer(12, D, levels=[4, 2.5])


def test_fsq_refuses_a_channel_of_two_levels_which_would_stay_dead():
    with pytest.raises(ValueError, match="levels must be integers >= 3.*2 levels"):
        FiniteScalarQuantizer(16, D, levels=[8, 2])
    with pytest.raises(ValueError, match="levels must be integers >= 3"):
        VQVAE(ModelConfig(num_codes=4, quantizer="fsq", quantizer_options={"levels": [2, 2]}))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_float64_latents_give_the_indices_of_float32(name):
    torch.manual_seed(0)
    quantizer = build(name).eval()
    z = torch.randn(2, D, 4, 4)
    single, double = quantizer(z), quantizer(z.double())
    assert torch.equal(single.indices, double.indices)
    assert double.z_q.dtype == torch.float64


def test_residual_vq_counts_codes_per_stage_and_refuses_index_spaces_too_large_to_count():
    rvq = ResidualVQ(512, D, stages=2)  # ModelConfig's K = 512 codes in each stage
    assert rvq.num_codes == 512**2 and [len(b.codebook) for b in rvq.codebooks] == [512, 512]
    with pytest.raises(ValueError, match="8 stages of 1024 codes make 1.21e\\+24 indices"):
        ResidualVQ(1024, D, stages=8)  # SoundStream's 8 x 1024: 80 bits, no int64 holds it
    with pytest.raises(ValueError, match=f"more than {MOST_INDICES:,}"):
        VQVAE(ModelConfig(num_codes=256, quantizer="rvq", quantizer_options={"stages": 3}))
    with pytest.raises(ValueError, match="stages >= 1"):
        ResidualVQ(16, D, stages=0)


def test_only_quantizers_with_a_commitment_term_take_beta():
    assert not FiniteScalarQuantizer.takes_beta and ResidualVQ.takes_beta
    assert RotationQuantizer.takes_beta
    assert build_quantizer("rvq", 8, D, beta=0.5).beta == 0.5
    fsq = build_quantizer("fsq", 512, D, beta=0.5)  # built without it
    assert "beta" not in vars(fsq)


def test_every_variant_of_the_chapter_builds():
    variants = quantizer_variants()
    assert len(variants) == 7
    models = {name: VQVAE(config) for name, config in variants.items()}
    assert models["RVQ 2 x 512"].quantizer.num_codes == 512**2
    counts = torch.ones(512**2, dtype=torch.int64)
    assert models["RVQ 2 x 512"].quantizer.stage_counts(counts).shape == (2, 512)
    assert models["FSQ [8,8,8]"].quantizer.stage_counts(torch.ones(512)).shape == (1, 512)


# -- against vector-quantize-pytorch -------------------------------------------------------


@pytest.mark.parametrize("levels", [[8, 8, 8], [7, 5, 5, 5, 5], [8, 5, 5, 5]])
def test_fsq_matches_vector_quantize_pytorch(levels):
    reference = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    ours = FiniteScalarQuantizer(math.prod(levels), 64, levels=levels)
    theirs = reference.FSQ(levels=levels, dim=64)
    theirs.project_in.load_state_dict(ours.project_in.state_dict())
    theirs.project_out.load_state_dict(ours.project_out.state_dict())
    z = torch.randn(4, 64, 8, 8) * 3
    out = ours(z)
    z_q, indices = theirs(z)
    torch.testing.assert_close(out.z_q, z_q, rtol=0, atol=0)
    # Deliberate difference: the book's interface has int64 indices, theirs are int32.
    assert torch.equal(out.indices, indices.long())
    torch.testing.assert_close(ours.decode(out.indices), theirs.indices_to_codes(indices))
    # Without projections, on the grid itself
    plain = reference.FSQ(levels=levels)
    grid_z = torch.randn(3, 100, len(levels)) * 2
    torch.testing.assert_close(ours.quantize(grid_z), plain.quantize(grid_z))
    every = torch.arange(ours.num_codes)
    torch.testing.assert_close(ours.indices_to_codes(every), plain.indices_to_codes(every))


def test_rotation_trick_matches_vector_quantize_pytorch():
    pytest.importorskip("vector_quantize_pytorch")
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(200, 64, generator=generator) * 2
    e = torch.randn(200, 64, generator=generator)
    g = torch.randn(200, 64, generator=generator)
    ours_z, theirs_z = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours, theirs = rotation_trick(ours_z, e), rotate_to(theirs_z, e)
    # Deliberate difference: theirs returns lambda R z_e, equal to the code up to rounding;
    # ours adds back that rounding, so its forward value is the code.
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, e)
    (ours_grad,) = torch.autograd.grad(ours, ours_z, g)
    (theirs_grad,) = torch.autograd.grad(theirs, theirs_z, g)
    torch.testing.assert_close(ours_grad, theirs_grad)


@pytest.mark.parametrize("stages", [2, 3])
def test_residual_vq_matches_vector_quantize_pytorch(stages):
    reference = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    ours = ResidualVQ(32, 64, stages=stages).eval()
    theirs = reference.ResidualVQ(dim=64, num_quantizers=stages, codebook_size=32).eval()
    for stage in range(stages):
        codebook = torch.randn(32, 64) / (stage + 1)
        ours.codebooks[stage].codebook.copy_(codebook)
        theirs.layers[stage]._codebook.embed.copy_(codebook.unsqueeze(0))  # (heads, K, D)
    z = torch.randn(2, 64, 8, 8)
    out = ours(z)
    # Theirs takes (B, N, D) sequences: (B, D, H, W) -> (B, H*W, D)
    z_q, indices, _ = theirs(z.permute(0, 2, 3, 1).reshape(2, 64, 64))
    torch.testing.assert_close(out.z_q.permute(0, 2, 3, 1).reshape(2, 64, 64), z_q)
    assert torch.equal(ours.split(out.indices).permute(1, 2, 3, 0).reshape(2, 64, stages), indices)
