# Generated from notebooks/09_beyond_the_codebook.ipynb by tools/export.py: edit the notebook.
"""The quantisers of chapters 7 and 9 side by side, as model configurations.

Chapter 9 (`notebooks/09_beyond_the_codebook.ipynb`) trains them on CIFAR-10;
`benchmarks/quantizer_variants.py` trains the same ones from the command line.
"""

from vqvae_lite.codebook_upkeep import variants
from vqvae_lite.model import ModelConfig


def quantizer_variants(restart_dead_after: int = 20) -> dict[str, ModelConfig]:
    """Plain VQ, chapter 7's default, the rotation trick, FSQ and residual VQ, by name."""
    restart = {"restart_dead_after": restart_dead_after}
    return {
        "plain VQ": ModelConfig(quantizer="vq"),
        "EMA + restart": variants(restart_dead_after)["EMA + restart"],
        "rotation, decay 0.99": ModelConfig(
            quantizer="rotation", quantizer_options=restart | {"decay": 0.99}
        ),
        "rotation, decay 0.8": ModelConfig(
            quantizer="rotation", quantizer_options=restart | {"decay": 0.8}
        ),
        "FSQ [8,8,8]": ModelConfig(
            num_codes=512, quantizer="fsq", quantizer_options={"levels": [8, 8, 8]}
        ),
        "FSQ [7,5,5,5,5]": ModelConfig(
            num_codes=4375, quantizer="fsq", quantizer_options={"levels": [7, 5, 5, 5, 5]}
        ),
        "RVQ 2 x 512": ModelConfig(
            num_codes=512, quantizer="rvq", quantizer_options=restart | {"stages": 2}
        ),
    }
