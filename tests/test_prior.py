"""Chapter 8: the priors over the codes are causal, the gated PixelCNN has no blind spot,
bits are counted right, priors are built by name from a registry, sampling is reproducible and
bad input is refused by name."""

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

import vqvae_lite.code_dataset as code_dataset
from vqvae_lite.code_dataset import (
    CodeBatches,
    CodeSplits,
    cached_codes,
    check_codes,
    check_labels,
    decode_codes,
    encode_splits,
)
from vqvae_lite.code_transformer import CodeTransformer
from vqvae_lite.likelihood import (
    UnigramPrior,
    bits_per_code,
    bits_per_dim,
    discretized_gaussian_nats,
    position_bits,
)
from vqvae_lite.loop import fit
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.pixelcnn import GatedPixelCNN, MaskedPixelCNN
from vqvae_lite.prior_registry import (
    PRIORS,
    PriorConfig,
    build_prior,
    dependencies,
    register_prior,
)
from vqvae_lite.prior_task import PRIOR_MODELS, PriorTask
from vqvae_lite.sampling import guided_log_probs, sample
from vqvae_lite.train_config import TrainConfig

K, CLASSES = 512, 10
BEFORE = torch.ones(64, 64).tril(-1).bool()  # [p, q]: position q comes before p


def small_priors():
    torch.manual_seed(0)
    return {
        "gated": GatedPixelCNN(K, CLASSES, dim=16, layers=6),  # the chapter's depth
        "transformer": CodeTransformer(K, CLASSES, dim=32, layers=2, heads=4),
    }


@pytest.mark.parametrize("name", ["gated", "transformer", "plain"])
def test_logits_never_depend_on_the_code_they_predict_or_later(name):
    torch.manual_seed(0)
    prior = small_priors().get(name) or MaskedPixelCNN(K, CLASSES, dim=16, layers=6)
    seen = dependencies(prior)  # (64, 64): [p, q] True when logits at p depend on code q
    assert not (seen & ~BEFORE).any()


@pytest.mark.parametrize("name", ["gated", "transformer"])
def test_logits_depend_on_every_earlier_code(name):
    assert torch.equal(dependencies(small_priors()[name]), BEFORE)


def test_plain_masked_pixelcnn_of_the_same_depth_has_a_blind_spot():
    torch.manual_seed(0)
    seen = dependencies(MaskedPixelCNN(K, CLASSES, dim=16, layers=6))
    blind = BEFORE & ~seen
    assert blind.any()


def test_all_zero_logits_cost_exactly_log2_k_bits_per_code():
    uniform = UnigramPrior(torch.ones(K))
    codes = torch.randint(K, (20, 8, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(20) % CLASSES
    assert torch.equal(uniform(codes, labels), torch.zeros(20, K, 8, 8))
    assert bits_per_code(uniform, codes, labels) == pytest.approx(math.log2(K), abs=1e-5)


def test_unigram_prior_costs_the_cross_entropy_of_its_frequencies():
    counts = torch.tensor([3.0, 1.0, 0.0, 0.0])  # smoothed: 4, 2, 1, 1 out of 8
    prior = UnigramPrior(counts)
    codes = torch.tensor([[[0, 1], [2, 3]]])
    expected = -(math.log2(4 / 8) + math.log2(2 / 8) + 2 * math.log2(1 / 8)) / 4
    assert bits_per_code(prior, codes, torch.zeros(1, dtype=torch.int64)) == pytest.approx(
        expected, abs=1e-6
    )


def test_sampling_is_reproducible_valid_and_follows_the_class():
    prior = small_priors()["gated"]
    with torch.no_grad():  # a visible class bias, so that the class matters at init too
        for block in prior.blocks:
            block.label_bias.weight.normal_(0, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(CLASSES)

    def draw(labels):
        return sample(prior, labels, generator=torch.Generator().manual_seed(0))

    first, again = draw(labels), draw(labels)
    assert torch.equal(first, again)
    assert first.shape == (CLASSES, 8, 8) and first.dtype == torch.int64
    assert 0 <= first.min() and first.max() < K
    assert not torch.equal(first, draw((labels + 1) % CLASSES))


def test_sampled_codes_decode_into_images():
    torch.manual_seed(0)
    model = VQVAE(ModelConfig(hidden=16, residual_hidden=8, embedding_dim=8)).eval()
    codes = sample(small_priors()["transformer"], torch.arange(3))
    images = decode_codes(model, codes)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8


@pytest.mark.parametrize(
    "codes, words",
    [
        (torch.full((2, 8, 8), K), "in [0, 512)"),  # index out of range
        (torch.full((2, 8, 8), -1), "in [0, 512)"),
        (torch.zeros(2, 8, 8), "integer code indices"),  # float indices
        (torch.zeros(2, 64, dtype=torch.int64), "of shape (B, "),  # wrong grid shape
        (torch.zeros(2, 4, 4, dtype=torch.int64), "of shape (B, 8, 8)"),
    ],
)
def test_bad_codes_raise_a_value_error_naming_what_is_expected(codes, words):
    for prior in small_priors().values():
        if isinstance(prior, GatedPixelCNN) and codes.dim() == 3 and codes.shape[1] == 4:
            continue  # a convolution takes any grid
        with pytest.raises(ValueError, match=re.escape(words)):
            prior(codes, torch.zeros(len(codes), dtype=torch.int64))


@pytest.mark.parametrize("labels", [torch.tensor([0, CLASSES]), torch.tensor([0.0, 1.0])])
def test_unknown_class_raises_a_value_error(labels):
    for prior in small_priors().values():
        with pytest.raises(ValueError, match=r"class labels of shape \(2,\) in \[0, 10\)"):
            prior(torch.zeros(2, 8, 8, dtype=torch.int64), labels)
    with pytest.raises(ValueError, match="class labels"):
        sample(small_priors()["gated"], labels)


def test_int32_codes_pass_and_a_zero_temperature_is_refused():
    check_codes(torch.zeros(1, 8, 8, dtype=torch.int32), K, (8, 8))
    with pytest.raises(ValueError, match="temperature > 0"):
        sample(small_priors()["gated"], torch.arange(2), temperature=0.0)


def test_discretized_gaussian_sums_to_one_over_the_256_values():
    values = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1)
    for mean, sigma in [(0.3, 0.1), (-1.0, 0.02), (0.99, 0.5)]:
        probs = (-discretized_gaussian_nats(torch.full((256, 1, 1, 1), mean), values, sigma)).exp()
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert bits_per_dim(3072.0, 576.0) == pytest.approx(1.1875)


def test_prior_task_trains_with_the_loop_and_resumes(tmp_path):
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(4, (64, 8, 8), generator=generator)  # only 4 of K codes appear
    codes = CodeSplits(train, train[:16], torch.arange(64) % 10, torch.arange(16) % 10, K)
    prior_config = PriorConfig("transformer", options=dict(dim=16, layers=1, heads=2))
    config = TrainConfig(steps=6, batch_size=8, learning_rate=1e-2, warmup_steps=1, log_every=2)
    run = fit(PriorTask(prior_config, config, codes), config, tmp_path)
    assert run.test["bits_per_code"] < math.log2(K) - 1  # learns that only 4 codes occur
    assert run.test["position_bits"].shape == (8, 8)
    longer = TrainConfig(**{**vars(config), "steps": 8})
    resumed = fit(PriorTask(prior_config, longer, codes), longer, tmp_path, resume=True)
    assert resumed.step == 8


def test_code_batches_resume_the_same_order():
    codes, labels = torch.arange(40).view(10, 2, 2), torch.arange(10)
    batches = CodeBatches(codes, labels, 3, "cpu", seed=0)
    next(batches)
    state = batches.state_dict()
    expected = [next(batches)[1] for _ in range(5)]
    restored = CodeBatches(codes, labels, 3, "cpu", seed=1)
    restored.load_state_dict(state)
    assert all(torch.equal(a, restored.__next__()[1]) for a in expected)


def test_code_batches_pair_each_code_grid_with_its_label():
    codes, labels = torch.arange(40).view(10, 2, 2), torch.arange(10)
    grids, classes = next(CodeBatches(codes, labels, 4, "cpu", seed=0))
    assert torch.equal(grids, codes[classes])  # row i of codes is the grid of label i


def test_cached_codes_are_read_back_for_the_same_model_and_images_only(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = VQVAE(ModelConfig(hidden=16, residual_hidden=8, embedding_dim=8)).eval()
    images = torch.randint(256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    splits = SimpleNamespace(
        train=images.to(torch.uint8),
        test=images[:2].to(torch.uint8),
        train_labels=torch.arange(6),
        test_labels=torch.arange(2),
    )
    path = tmp_path / "codes.pt"
    encoded = []
    real_encode = code_dataset.encode_splits
    monkeypatch.setattr(
        code_dataset, "encode_splits", lambda *a: encoded.append(1) or real_encode(*a)
    )
    first = cached_codes(model, splits, path)
    again = cached_codes(model, splits, path)
    assert len(encoded) == 1 and torch.equal(first.train, again.train)  # read, not encoded
    assert again.train.shape == (6, 8, 8) and again.num_codes == model.config.num_codes
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights: encoded again
    cached_codes(model, splits, path)
    assert len(encoded) == 2
    path.write_bytes(path.read_bytes()[:100])  # a damaged file: encoded again, and replaced
    cached_codes(model, splits, path)
    assert len(encoded) == 3 and len(cached_codes(model, splits, path).train) == 6
    assert len(encoded) == 3 and [p.name for p in tmp_path.iterdir()] == ["codes.pt"]


def tiny_vqvae(**options) -> VQVAE:
    torch.manual_seed(0)
    config = ModelConfig(hidden=16, residual_hidden=8, embedding_dim=8, num_codes=8, **options)
    return VQVAE(config).eval()


def test_codes_span_the_quantizers_index_space_not_the_codebook_size():
    model = tiny_vqvae(quantizer="rvq", quantizer_options={"stages": 2})  # 8**2 indices
    images = torch.randint(256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    splits = SimpleNamespace(
        train=images.to(torch.uint8),
        test=images[:2].to(torch.uint8),
        train_labels=torch.arange(4),
        test_labels=torch.arange(2),
    )
    assert encode_splits(model, splits).num_codes == 64
    codes = torch.tensor([[[63, 0], [9, 40]]])  # beyond the 8 codes of one stage
    assert decode_codes(model, codes).shape == (1, 3, 8, 8)


def test_sampling_and_measuring_restore_the_mode_even_when_refused():
    prior = small_priors()["gated"].train()
    with pytest.raises(ValueError, match="class labels"):
        sample(prior, torch.tensor([0, CLASSES]))
    with pytest.raises(ValueError, match="class labels"):
        position_bits(prior, torch.zeros(2, 8, 8, dtype=torch.int64), torch.tensor([0, CLASSES]))
    assert prior.training
    sample(prior, torch.arange(2))
    assert prior.training


@pytest.mark.parametrize("temperature", [math.inf, -math.inf, math.nan, 0.0, -1.0])
def test_sampling_refuses_a_temperature_that_is_not_finite_and_positive(temperature):
    with pytest.raises(ValueError, match="finite temperature > 0"):
        sample(small_priors()["gated"], torch.arange(2), temperature=temperature)


def test_the_chapters_priors_are_built_by_name_from_the_registry():
    assert {"pixelcnn", "transformer", "masked-pixelcnn"} <= set(PRIORS)
    built = {name: build_prior(config) for name, config in PRIOR_MODELS["cpu"].items()}
    assert isinstance(built["pixelcnn"], GatedPixelCNN)
    assert isinstance(built["transformer"], CodeTransformer)
    assert built["transformer"].grid == (8, 8)


def test_build_prior_gives_the_same_weights_as_the_class_for_the_same_seed():
    torch.manual_seed(0)
    built = build_prior(PriorConfig("pixelcnn", options=dict(dim=16, layers=2)))
    torch.manual_seed(0)
    direct = GatedPixelCNN(512, 10, dim=16, layers=2)
    pairs = zip(built.parameters(), direct.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


class ColumnPrior(nn.Module):
    """A prior that sees only the class: one learned logit vector per class and column."""

    def __init__(self, num_codes, num_classes, grid):
        super().__init__()
        self.num_codes, self.num_classes = num_codes, num_classes
        self.logits = nn.Parameter(torch.zeros(num_classes, num_codes, grid[1]))

    def forward(self, codes, labels):
        check_codes(codes, self.num_codes)
        check_labels(labels, self.num_classes, len(codes))
        b, h, w = codes.shape
        return self.logits[labels][:, :, None, :].expand(b, -1, h, w)  # (B, K, H, W)


def test_a_new_prior_is_one_class_and_one_register_line(monkeypatch):
    monkeypatch.setitem(PRIORS, "column", None)  # removed again after the test
    register_prior("column")(ColumnPrior)
    train = torch.randint(4, (32, 8, 8), generator=torch.Generator().manual_seed(0))
    codes = CodeSplits(train, train[:8], torch.arange(32) % 10, torch.arange(8) % 10, K)
    config = TrainConfig(steps=4, batch_size=8, learning_rate=0.1, warmup_steps=1, log_every=2)
    task = PriorTask(PriorConfig("column", num_codes=K), config, codes)
    run = fit(task, config)
    assert isinstance(task.model, ColumnPrior) and run.test["bits_per_code"] < math.log2(K)
    assert sample(task.model, torch.arange(3)).shape == (3, 8, 8)


@pytest.mark.parametrize(
    "config, words",
    [
        (PriorConfig("no-such-prior"), "unknown prior 'no-such-prior'; registered: "),
        (PriorConfig("pixelcnn", options={"heads": 4}), "prior 'pixelcnn' cannot take options"),
        (PriorConfig("transformer", options={"dim": 30, "heads": 4}), "multiple of heads"),
        (PriorConfig("pixelcnn", options={"layers": 0}), "GatedPixelCNN.layers must be"),
    ],
)
def test_build_prior_names_what_is_wrong(config, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        build_prior(config)


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(num_codes=0), "PriorConfig.num_codes must be an integer >= 1"),
        (dict(grid=(8,)), "PriorConfig.grid must be (height, width)"),
        (dict(grid=(8, 0)), "PriorConfig.grid.width must be"),
        (dict(options=[("dim", 8)]), "PriorConfig.options must be a dict"),
    ],
)
def test_prior_config_refuses_bad_sizes(fields, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        PriorConfig(**fields)


class FixedPrior(nn.Module):
    """A prior whose next code ignores the codes before it: p(code | class) = probs[class], on
    any grid; with equal rows it ignores the class too."""

    def __init__(self, probs: Tensor):
        super().__init__()
        self.register_buffer("log_probs", probs.log())  # (C, K)
        self.num_classes, self.num_codes = probs.shape
        self.embedding = nn.Embedding(self.num_codes, 1)  # unused: a prior has one

    def forward(self, codes: Tensor, labels: Tensor) -> Tensor:
        check_labels(labels, self.num_classes, len(codes))
        logits = self.log_probs[labels]  # (B, K)
        return logits[:, :, None, None].expand(-1, -1, *codes.shape[1:])  # (B, K, H, W)


def test_guided_log_probs_are_the_sharpened_ratio_to_the_class_summed_out():
    class_probs = torch.tensor([[0.9, 0.1], [0.1, 0.9]])  # p(code | class), (C, K)
    per_class = class_probs.log()[None].expand(3, -1, -1)  # (B, C, K)
    labels = torch.tensor([0, 0, 1])
    posterior = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]).log()  # p(class | seen)
    guided = guided_log_probs(per_class, labels, posterior, guidance=1.0).softmax(-1)
    marginal = torch.tensor([[0.5, 0.5], [0.82, 0.18], [0.82, 0.18]])  # sum_c p(c) p(x | c)
    wanted = class_probs[labels]
    expected = wanted**2 / marginal
    assert torch.allclose(guided, expected / expected.sum(1, keepdim=True), atol=1e-6)
    unguided = guided_log_probs(per_class, labels, posterior, guidance=0.0)
    assert torch.allclose(unguided, wanted.log())


def test_guided_sampling_follows_the_posterior_of_the_codes_drawn_so_far():
    # class 0 favours code 0: first code guided by 0.9^2 / 0.5, the second, after code 0 made
    # class 0 likelier (posterior 0.9), by 0.9^2 / 0.82; a uniform posterior would repeat the first
    prior = FixedPrior(torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    labels = torch.zeros(20000, dtype=torch.int64)
    codes = sample(prior, labels, (1, 2), generator=torch.Generator().manual_seed(0), guidance=1)
    first, second = codes[:, 0, 0], codes[:, 0, 1]
    guided_first = (0.1**2 / 0.5) / (0.9**2 / 0.5 + 0.1**2 / 0.5)  # p(code 1) = 0.0122
    guided_second = (0.1**2 / 0.18) / (0.9**2 / 0.82 + 0.1**2 / 0.18)  # = 0.0532
    assert first.float().mean().item() == pytest.approx(guided_first, abs=0.004)
    after_zero = second[first == 0].float().mean().item()
    assert after_zero == pytest.approx(guided_second, abs=0.008)


def test_guidance_changes_nothing_when_the_prior_ignores_the_class():
    prior = FixedPrior(torch.tensor([[0.5, 0.3, 0.2]]).expand(4, -1))
    labels = torch.arange(4).repeat(5)

    def draw(guidance):
        return sample(prior, labels, generator=torch.Generator().manual_seed(0), guidance=guidance)

    assert torch.equal(draw(0.0), draw(3.0))


def test_guidance_raises_the_share_of_the_codes_that_the_class_favours():
    prior = FixedPrior(torch.tensor([[0.6, 0.4], [0.4, 0.6]]))
    labels = torch.zeros(2000, dtype=torch.int64)

    def share_of_code_0(guidance):
        codes = sample(
            prior, labels, (2, 2), generator=torch.Generator().manual_seed(0), guidance=guidance
        )
        return (codes == 0).float().mean().item()

    assert share_of_code_0(0.0) == pytest.approx(0.6, abs=0.02)
    assert share_of_code_0(2.0) > 0.75


@pytest.mark.parametrize("guidance", [math.inf, math.nan, -0.5])
def test_sampling_refuses_a_guidance_that_is_not_finite_and_at_least_zero(guidance):
    with pytest.raises(ValueError, match="finite guidance >= 0"):
        sample(small_priors()["gated"], torch.arange(2), guidance=guidance)


def test_guided_sampling_runs_on_the_chapters_priors_and_refuses_unknown_classes():
    for prior in small_priors().values():
        codes = sample(prior, torch.arange(3), guidance=1.5)
        assert codes.shape == (3, 8, 8) and 0 <= codes.min() and codes.max() < K
        with pytest.raises(ValueError, match="class labels"):
            sample(prior, torch.tensor([0, CLASSES]), guidance=1.5)
