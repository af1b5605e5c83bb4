"""Unit tests of chapters 1-5: shapes, the lookup, the straight-through gradient, the loss, and
four mistakes of popular implementations that live in the model (swapped codebook and
commitment terms, shared residual weights, an in-place ReLU on the skip path, the variance on
the wrong scale)."""

import io

import pytest
import torch

from vqvae_lite.codebook import codes_used, lookup, nearest_codes, perplexity, squared_distances
from vqvae_lite.encoder import Encoder, ResidualLayer, ResidualStack
from vqvae_lite.losses import vqvae_loss
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import (
    VectorQuantizer,
    codebook_loss,
    commitment_loss,
    straight_through,
)
from vqvae_lite.training_scale import training_variance


@pytest.fixture(scope="module")
def model() -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(ModelConfig())


def test_config_defaults_are_the_mishalaskin_sizes():
    config = ModelConfig()
    assert (config.hidden, config.residual_hidden, config.residual_layers) == (128, 32, 2)
    assert (config.embedding_dim, config.num_codes, config.beta) == (64, 512, 0.25)


def test_shapes_through_the_model(model):
    x = torch.randn(32, 3, 32, 32)
    assert model.encoder.conv1(x).shape == (32, 64, 16, 16)
    assert model.encoder(x).shape == (32, 128, 8, 8)
    out = model(x)
    assert out.z_e.shape == out.z_q.shape == (32, 64, 8, 8)
    assert out.indices.shape == (32, 8, 8) and out.indices.dtype == torch.int64
    assert out.x_hat.shape == (32, 3, 32, 32)
    assert model.quantizer.codebook.shape == (512, 64)


def test_distances_match_brute_force_and_cdist():
    torch.manual_seed(0)
    z, codebook = torch.randn(2048, 64), torch.randn(512, 64)
    brute = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(squared_distances(z, codebook), brute, atol=1e-3)
    assert torch.allclose(squared_distances(z, codebook), torch.cdist(z, codebook) ** 2, atol=1e-3)


def test_nearest_codes_chunked_equals_unchunked_and_computes_in_float32():
    torch.manual_seed(0)
    z, codebook = torch.randn(1000, 8), torch.randn(32, 8)
    expected = torch.cdist(z, codebook).argmin(dim=1)
    assert torch.equal(nearest_codes(z, codebook, chunk_size=7), expected)
    assert squared_distances(z.bfloat16(), codebook.bfloat16()).dtype == torch.float32


def test_lookup_gathers_rows():
    codebook = torch.arange(12.0).view(4, 3)
    assert torch.equal(lookup(torch.tensor([2, 0, 2]), codebook), codebook[[2, 0, 2]])


def test_perplexity_and_codes_used():
    assert perplexity(torch.zeros(100, dtype=torch.long), 8) == pytest.approx(1.0)
    assert perplexity(torch.arange(8).repeat(10), 8) == pytest.approx(8.0)
    assert perplexity(torch.tensor([0, 0, 1, 1]), 8) == pytest.approx(2.0)
    assert codes_used(torch.tensor([3, 3, 5, 7]), 8) == 3


def test_straight_through_passes_the_gradient_unchanged():
    z_e = torch.randn(5, 4, requires_grad=True)
    z_q = torch.randn(5, 4)
    out = straight_through(z_e, z_q)
    assert torch.equal(out, z_e + (z_q - z_e))  # the value is z_q (up to rounding)
    upstream = torch.randn(5, 4)
    out.backward(upstream)
    assert torch.equal(z_e.grad, upstream)


def test_quantizer_gradient_reaches_encoder_side_through_straight_through():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    quantized = quantizer(z_e)
    upstream = torch.randn_like(z_e)
    quantized.z_q.backward(upstream)
    assert torch.equal(z_e.grad, upstream)
    assert quantizer.codebook.grad is None  # z_q alone does not train the codebook


def test_swapped_terms_each_term_moves_only_its_side_and_beta_weights_commitment():
    torch.manual_seed(0)
    beta = 0.25
    quantizer = VectorQuantizer(8, 4, beta=beta)
    z_e = torch.randn(1, 4, 2, 5, requires_grad=True)  # (B, D, H, W): 10 vectors
    quantized = quantizer(z_e)
    x = torch.randn(3)
    terms = vqvae_loss(x.clone(), x, quantized.losses, data_variance=1.0)
    terms.total.backward()  # the reconstruction term is zero: only the quantiser's terms
    codes = quantizer.decode(quantized.indices).detach()
    # codebook term with weight 1: d/de mean((e - z)^2) ; commitment with beta: d/dz
    expected_codebook_grad = torch.autograd.grad(
        ((quantizer.codebook[quantized.indices] - z_e.detach().permute(0, 2, 3, 1)) ** 2).mean(),
        quantizer.codebook,
    )[0]
    expected_encoder_grad = beta * 2 * (z_e.detach() - codes) / z_e.numel()
    assert torch.allclose(quantizer.codebook.grad, expected_codebook_grad)
    assert torch.allclose(z_e.grad, expected_encoder_grad)


def test_codebook_term_moves_only_codebook_and_commitment_only_encoder():
    codebook = torch.nn.Parameter(torch.randn(8, 4))
    z_e = torch.randn(10, 4, requires_grad=True)
    codes = codebook[nearest_codes(z_e, codebook)]
    grads = torch.autograd.grad(codebook_loss(z_e, codes), [codebook, z_e], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0 and grads[1] is None
    grads = torch.autograd.grad(commitment_loss(z_e, codes), [codebook, z_e], allow_unused=True)
    assert grads[0] is None and grads[1].abs().sum() > 0


def test_vqvae_loss_adds_whatever_terms_the_quantizer_returns():
    x = torch.randn(3)
    terms = vqvae_loss(x, x, {"a": torch.tensor(0.5), "b": torch.tensor(0.25)}, 1.0)
    assert terms.total.item() == 0.75 and sorted(terms.quantizer) == ["a", "b"]
    assert vqvae_loss(x, x, {}, 1.0).total.item() == 0.0


def test_shared_layers_residual_layers_are_distinct_modules():
    stack = ResidualStack(channels=8, hidden=4, layers=3)
    layers = list(stack.layers)
    assert len({id(layer) for layer in layers}) == 3
    weights = [layer.block[1].weight for layer in layers]
    assert len({w.data_ptr() for w in weights}) == 3
    assert sum(p.numel() for p in stack.parameters()) == 3 * sum(
        p.numel() for p in layers[0].parameters()
    )


def test_inplace_relu_skip_path_carries_x_not_relu_x():
    layer = ResidualLayer(channels=4, hidden=2)
    torch.nn.init.zeros_(layer.block[3].weight)  # the residual branch now adds exactly zero
    x = torch.randn(2, 4, 5, 5)
    x_before = x.clone()
    out = layer(x)
    assert (x < 0).any()
    assert torch.equal(out, x_before), "the skip path must add x itself (negatives included)"
    assert torch.equal(x, x_before), "the layer must not modify its input in place"


def test_variance_scale_variance_is_measured_on_the_training_scale():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:2] = 255  # half black, half white: on [-1, 1] the variance is exactly 1
    assert training_variance(images) == pytest.approx(1.0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    on_training_scale = (images.double() / 127.5 - 1).var(unbiased=False).item()
    assert training_variance(images) == pytest.approx(on_training_scale, rel=1e-6)


def test_encoder_receptive_field_is_local():
    torch.manual_seed(0)
    encoder = Encoder(3, 16, 8, 2)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    encoder(x)[0, :, 0, 0].sum().backward()
    touched = x.grad.abs().sum(dim=(0, 1)) > 0
    assert not touched[-1, -1]  # a corner latent does not see the opposite corner


def test_save_and_load_round_trip(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = VQVAE(ModelConfig())
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    model.eval(), clone.eval()
    assert torch.equal(model(x).x_hat, clone(x).x_hat)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.randn(3, 32, 32), "rank 3"),
        (torch.randn(2, 4, 32, 32), "4 channels"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "torch.uint8"),
        (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        (torch.randn(2, 3, 30, 30), "divisible by 4"),
        (torch.zeros(2, 3, 0, 0), "shape (2, 3, 0, 0)"),
        ([[0.0] * 32] * 32, "got list"),
        (None, "got NoneType"),
    ],
)
def test_model_rejects_bad_input_with_the_expected_shape(model, bad, message):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)") as error:
        model(bad)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.randn(64, 8, 8), "rank 3"),
        (torch.randn(2, 32, 8, 8), "32 channels"),
        (torch.zeros(2, 64, 8, 8, dtype=torch.int64), "torch.int64"),
        (torch.full((2, 64, 8, 8), float("inf")), "NaN or inf"),
    ],
)
def test_quantizer_rejects_bad_input_with_the_expected_shape(bad, message):
    with pytest.raises(ValueError, match=r"\(B, 64, H, W\)") as error:
        VectorQuantizer(512, 64)(bad)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 8, 8), 512), "from 512 to 512"),
        (torch.full((1, 8, 8), -1), "from -1 to -1"),
        (torch.zeros(1, 8, 8), "torch.float32"),
        (torch.zeros(64, dtype=torch.int64), "shape (64,)"),
    ],
)
def test_decode_refuses_indices_outside_the_codebook(model, bad, message):
    with pytest.raises(ValueError, match=r"\(B, H, W\) in \[0, 512\)") as error:
        model.decode_indices(bad)
    assert message in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_model_accepts_float_images_of_any_precision(model, dtype):
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    expected = model(x).x_hat
    assert torch.allclose(model(x.to(dtype)).x_hat, expected, atol=0.1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_codes", 0),
        ("embedding_dim", -3),
        ("residual_layers", -1),
        ("beta", -1.0),
        ("beta", float("nan")),
        ("hidden", 7),
        ("num_codes", True),
        ("residual_layers", False),
        ("quantizer", None),
        ("quantizer_options", ["levels"]),
    ],
)
def test_model_config_names_a_bad_field(field, value):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
        ModelConfig(**{field: value})


def test_unknown_quantizer_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown quantizer 'nope'; registered: .*vq"):
        VQVAE(ModelConfig(quantizer="nope"))
    with pytest.raises(ValueError, match="cannot take options"):
        VQVAE(ModelConfig(quantizer="vq", quantizer_options={"decay": 0.9}))
