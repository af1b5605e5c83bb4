"""vqvae-lite: the VQ-VAE of van den Oord et al. (2017), built step by step in notebooks.

Every module except this one is generated from a chapter in `notebooks/` by `tools/export.py`;
the first line of each names the notebook to edit. Importing the package registers every
quantiser of the book in `vqvae_lite.quantizer.QUANTIZERS`. The modules that train
(`train`, `cli`, `prior`, `distributed`, `quantizer_variants`) are imported on their own, so that
`python -m vqvae_lite.train` and `python -m vqvae_lite.prior` run them once.
"""

from vqvae_lite.codebook import codes_used, nearest_codes, perplexity, squared_distances
from vqvae_lite.codebook_upkeep import (
    EMAQuantizerWithUpkeep,
    VectorQuantizerWithUpkeep,
    kmeans,
    restart_dead_codes,
)
from vqvae_lite.data import ImageSplits, ResidentBatches, load_cifar10, training_variance
from vqvae_lite.decoder import Decoder
from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.encoder import Encoder, ResidualLayer, ResidualStack
from vqvae_lite.fsq import FiniteScalarQuantizer
from vqvae_lite.images import decode_codes, encode_image, load_image, reconstruct
from vqvae_lite.loop import StepOutput, Task, TrainConfig, TrainingInterrupted, fit
from vqvae_lite.losses import LossTerms, vqvae_loss
from vqvae_lite.metrics import evaluate
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.quantizer import (
    QUANTIZERS,
    Quantized,
    Quantizer,
    VectorQuantizer,
    build_quantizer,
    register_quantizer,
    straight_through,
)
from vqvae_lite.residual_vq import ResidualVQ
from vqvae_lite.rotation_trick import RotationQuantizer, rotation_trick
from vqvae_lite.viz import show_images, show_reconstructions

__version__ = "0.1.0"

__all__ = [
    "QUANTIZERS",
    "VQVAE",
    "Decoder",
    "EMAQuantizerWithUpkeep",
    "EMAVectorQuantizer",
    "Encoder",
    "FiniteScalarQuantizer",
    "ImageSplits",
    "LossTerms",
    "ModelConfig",
    "Quantized",
    "Quantizer",
    "ResidentBatches",
    "ResidualLayer",
    "ResidualStack",
    "ResidualVQ",
    "RotationQuantizer",
    "StepOutput",
    "Task",
    "TrainConfig",
    "TrainingInterrupted",
    "VectorQuantizer",
    "VectorQuantizerWithUpkeep",
    "build_quantizer",
    "codes_used",
    "decode_codes",
    "encode_image",
    "evaluate",
    "fit",
    "kmeans",
    "load_cifar10",
    "load_image",
    "nearest_codes",
    "perplexity",
    "reconstruct",
    "register_quantizer",
    "restart_dead_codes",
    "rotation_trick",
    "show_images",
    "show_reconstructions",
    "squared_distances",
    "straight_through",
    "training_variance",
    "vqvae_loss",
]
