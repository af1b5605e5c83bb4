"""vqvae-lite: the VQ-VAE of van den Oord et al. (2017), built step by step in notebooks.

Every module except this one is generated from a chapter in `notebooks/` by `tools/export.py`;
the first line of each names the notebook to edit. Importing the package registers every
quantiser of the book in `vqvae_lite.quantizer.QUANTIZERS` and every prior in
`vqvae_lite.prior_registry.PRIORS`; `vqvae_lite.quantizer.registered_quantizers()` also finds a
quantiser added as a new module that nothing imports. The command lines (`cli`, `prior`,
`distributed`) are imported on their own, so that `python -m vqvae_lite` and
`python -m vqvae_lite.prior` run them once. `pretrained("default")` and
`pretrained_prior("transformer")` return the book's reference models, shipped with the package.
"""

from vqvae_lite.code_transformer import CodeTransformer
from vqvae_lite.codebook import codes_used, nearest_codes, perplexity, squared_distances
from vqvae_lite.codebook_upkeep import (
    EMAQuantizerWithUpkeep,
    VectorQuantizerWithUpkeep,
    kmeans,
    restart_dead_codes,
)
from vqvae_lite.data import load_cifar10
from vqvae_lite.decoder import Decoder
from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.encoder import Encoder, ResidualLayer, ResidualStack
from vqvae_lite.fsq import FiniteScalarQuantizer
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.images import decode_codes, encode_image, load_image, reconstruct
from vqvae_lite.interrupts import TrainingInterrupted
from vqvae_lite.loop import fit
from vqvae_lite.losses import LossTerms, vqvae_loss
from vqvae_lite.metrics import evaluate
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.pixelcnn import GatedPixelCNN, MaskedPixelCNN
from vqvae_lite.prior_registry import PRIORS, PriorConfig, build_prior, register_prior
from vqvae_lite.quantizer import (
    QUANTIZERS,
    CodebookQuantizer,
    Quantized,
    Quantizer,
    VectorQuantizer,
    build_quantizer,
    register_quantizer,
    registered_quantizers,
    straight_through,
)
from vqvae_lite.residual_vq import ResidualVQ
from vqvae_lite.rotation_trick import RotationQuantizer, rotation_trick
from vqvae_lite.shipped import load_vqvae, pretrained, provenance
from vqvae_lite.shipped_priors import load_prior, pretrained_prior
from vqvae_lite.task import StepOutput, Task
from vqvae_lite.train_config import TrainConfig
from vqvae_lite.training_scale import ResidentBatches, training_variance
from vqvae_lite.viz import show_images, show_reconstructions

__version__ = "0.1.0"

__all__ = [
    "PRIORS",
    "QUANTIZERS",
    "VQVAE",
    "CodeTransformer",
    "CodebookQuantizer",
    "Decoder",
    "EMAQuantizerWithUpkeep",
    "EMAVectorQuantizer",
    "Encoder",
    "FiniteScalarQuantizer",
    "GatedPixelCNN",
    "ImageSplits",
    "LossTerms",
    "MaskedPixelCNN",
    "ModelConfig",
    "PriorConfig",
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
    "build_prior",
    "codes_used",
    "decode_codes",
    "encode_image",
    "evaluate",
    "fit",
    "kmeans",
    "load_cifar10",
    "load_image",
    "load_prior",
    "load_vqvae",
    "nearest_codes",
    "perplexity",
    "pretrained",
    "pretrained_prior",
    "provenance",
    "reconstruct",
    "register_prior",
    "register_quantizer",
    "registered_quantizers",
    "restart_dead_codes",
    "rotation_trick",
    "show_images",
    "show_reconstructions",
    "squared_distances",
    "straight_through",
    "training_variance",
    "vqvae_loss",
]
