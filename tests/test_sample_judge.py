"""The sample judge of `benchmarks/sample_judge.py`: its share of images judged right, its
cache key and the shapes its classifier reads and writes (no CIFAR-10 training here)."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sample_judge.py"
spec = importlib.util.spec_from_file_location("sample_judge", PATH)
sample_judge = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sample_judge)


class FirstPixelClassifier(nn.Module):
    """Fixed logits: one-hot of each image's first pixel value modulo 10."""

    def __init__(self):
        super().__init__()
        self.register_buffer("eye", torch.eye(10))

    def forward(self, images):  # uint8 (B, 3, H, W) -> (B, 10)
        return self.eye[images[:, 0, 0, 0].long() % 10]


def test_judged_share_counts_the_images_given_their_own_class():
    predicted = torch.tensor([3, 3, 0, 9, 5, 5, 1, 2, 7, 7, 7, 4])
    labels = torch.tensor([3, 1, 0, 9, 5, 6, 1, 8, 7, 0, 7, 4])  # 8 of 12 agree
    images = torch.zeros(12, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = predicted
    classifier = FirstPixelClassifier()
    assert sample_judge.predicted_classes(classifier, images, batch_size=5).tolist() == (
        predicted.tolist()
    )
    assert sample_judge.judged_share(classifier, images, labels) == pytest.approx(8 / 12)
    per_class = sample_judge.share_per_class(predicted == labels, labels, 10)
    assert per_class[0].item() == pytest.approx(1 / 2)  # labels 0: one right, one wrong
    assert per_class[[2, 3]].tolist() == [0.0, 1.0]  # class 2 has no image; class 3 is right


def test_cache_key_changes_with_the_recipe_and_the_data():
    images = torch.randint(256, (20, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(10, (20,))
    key = sample_judge.cache_key(sample_judge.RECIPE, images, labels)
    assert key == sample_judge.cache_key(sample_judge.RECIPE, images.clone(), labels.clone())
    other_images = images.clone()
    other_images[7, 1, 2, 3] ^= 1
    assert key != sample_judge.cache_key(sample_judge.RECIPE, other_images, labels)
    assert key != sample_judge.cache_key(sample_judge.RECIPE, images, (labels + 1) % 10)
    for change in ({"seed": 1}, {"epochs": 1}, {"widths": (8, 16, 32)}, {"logit_scale": 1.0}):
        assert key != sample_judge.cache_key(replace(sample_judge.RECIPE, **change), images, labels)


def test_classifier_maps_uint8_images_to_logits():
    judge = sample_judge.JudgeNet((4, 8, 8)).eval()
    images = torch.randint(256, (5, 3, 32, 32), dtype=torch.uint8)
    logits = judge(images)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_augment_keeps_shape_and_pixels():
    images = torch.randint(256, (6, 3, 32, 32), dtype=torch.uint8)
    crops = sample_judge.augment(images, torch.Generator().manual_seed(0))
    assert crops.shape == images.shape
    values = set(images.unique().tolist())
    assert set(crops.unique().long().tolist()) <= values  # crops of reflections: no new pixels
