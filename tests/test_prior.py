"""Chapter 8: the priors over the codes are causal, the gated PixelCNN has no blind spot,
bits are counted right, sampling is reproducible and bad input is refused by name."""

import math
import re
from types import SimpleNamespace

import pytest
import torch

from vqvae_lite.loop import TrainConfig, fit
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.prior import (
    CodeBatches,
    CodeSplits,
    CodeTransformer,
    GatedPixelCNN,
    MaskedPixelCNN,
    PriorConfig,
    PriorTask,
    UnigramPrior,
    bits_per_code,
    bits_per_dim,
    cached_codes,
    check_codes,
    decode_codes,
    dependencies,
    discretized_gaussian_nats,
    sample,
)

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
    prior_config = PriorConfig(kind="transformer", dim=16, layers=1, heads=2)
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
    import vqvae_lite.prior as prior

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
    real_encode = prior.encode_splits
    monkeypatch.setattr(prior, "encode_splits", lambda *a: encoded.append(1) or real_encode(*a))
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


def test_the_command_trains_a_prior_on_a_checkpoint_writes_samples_and_resumes(
    tmp_path, monkeypatch, capsys
):
    from PIL import Image

    from vqvae_lite.checkpoint import load_checkpoint
    from vqvae_lite.cli import main as train_vqvae
    from vqvae_lite.prior import main as train_prior

    monkeypatch.setenv("VQVAE_LITE_CACHE", str(tmp_path / "cache"))
    rng = torch.Generator().manual_seed(0)
    for split, count in (("train", 32), ("test", 4)):
        for name in ("dark", "light"):  # two classes of 32x32 images
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(128, (32, 32, 3), generator=rng, dtype=torch.uint8)
                Image.fromarray((pixels + 127 * (name == "light")).numpy()).save(
                    folder / f"{i}.png"
                )
    data, vqvae = str(tmp_path / "images"), tmp_path / "vqvae"
    common = ["--preset", "cpu", "--device", "cpu", "--data", data]
    assert train_vqvae([*common, "--out", str(vqvae), "--steps", "1", "--batch-size", "8"]) == 0
    out = tmp_path / "prior"
    command = [*common, "--vqvae", str(vqvae / "checkpoint.pt"), "--out", str(out)]
    assert train_prior([*command, "--prior", "transformer", "--steps", "2"]) == 0
    with Image.open(out / "samples.png") as png:  # 10 samples per class: 2 rows of 10
        assert png.mode == "RGB" and 4 * png.height < png.width < 6 * png.height
    assert (out / "codes.pt").is_file()
    assert train_prior([*command, "--prior", "transformer", "--steps", "3", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
    capsys.readouterr()
    missing = [*common, "--vqvae", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")]
    assert train_prior(missing) == 1
    assert "none.pt" in capsys.readouterr().err
