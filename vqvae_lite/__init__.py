"""vqvae-lite: the VQ-VAE of van den Oord et al. (2017), built step by step in notebooks.

Every module except this one is generated from a chapter in `notebooks/` by `tools/export.py`;
the first line of each names the notebook to edit.
"""

from vqvae_lite.codebook import codes_used, nearest_codes, perplexity, squared_distances
from vqvae_lite.codebook_care import EMAVectorQuantizer, kmeans, restart_dead_codes
from vqvae_lite.data import ImageSplits, ResidentBatches, load_cifar10, training_variance
from vqvae_lite.decoder import Decoder
from vqvae_lite.encoder import Encoder, ResidualLayer, ResidualStack
from vqvae_lite.losses import LossTerms, vqvae_loss
from vqvae_lite.metrics import evaluate
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import VectorQuantizer, straight_through
from vqvae_lite.viz import show_images, show_reconstructions

__version__ = "0.1.0"

__all__ = [
    "VQVAE",
    "Decoder",
    "EMAVectorQuantizer",
    "Encoder",
    "ImageSplits",
    "LossTerms",
    "ModelConfig",
    "ResidentBatches",
    "ResidualLayer",
    "ResidualStack",
    "VectorQuantizer",
    "codes_used",
    "evaluate",
    "kmeans",
    "load_cifar10",
    "nearest_codes",
    "perplexity",
    "restart_dead_codes",
    "show_images",
    "show_reconstructions",
    "squared_distances",
    "straight_through",
    "training_variance",
    "vqvae_loss",
]
