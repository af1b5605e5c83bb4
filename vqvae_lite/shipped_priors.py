# Generated from notebooks/08_prior.ipynb by tools/export.py: edit the notebook.
"""A trained prior from a prior run's checkpoint or by its shipped name: `pretrained_prior(
"transformer")` is the reference prior over the codes of `pretrained("default")`.

The shipped priors live beside the shipped VQ-VAEs (chapter 6's `vqvae_lite.shipped`: the
same manifest, sha256 check and provenance); each names in its provenance the VQ-VAE whose
codes it models. Chapter 8 (`notebooks/08_prior.ipynb`) samples from it.
"""

from pathlib import Path

import torch
from torch import nn

from vqvae_lite.checkpoint import CheckpointError, load_checkpoint
from vqvae_lite.prior_registry import PriorConfig, build_prior
from vqvae_lite.shipped import as_float32, read_shipped, shipped_names


def prior_from_state(config: dict, weights: dict, device: str | torch.device) -> nn.Module:
    """The prior that `config` (a PriorConfig as a dict) describes, with `weights`, in eval
    mode on `device`."""
    prior = build_prior(PriorConfig(**config))
    prior.load_state_dict(as_float32(weights))
    return prior.to(device).eval()


def pretrained_prior(name: str = "transformer", device: str | torch.device = "cpu") -> nn.Module:
    """A shipped prior, ready to sample in eval mode: "transformer" or "pixelcnn"."""
    contents = read_shipped(name, "prior")
    return prior_from_state(contents["config"], contents["weights"], device)


def load_prior(source: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A trained prior from the checkpoint of `python -m vqvae_lite.prior` or a shipped name
    (a file of that name, if there is one, wins)."""
    if not Path(source).exists() and str(source) in shipped_names("prior"):
        return pretrained_prior(str(source), device)
    try:
        state = load_checkpoint(source)
    except CheckpointError as error:
        if Path(source).exists():
            raise
        names = ", ".join(shipped_names("prior"))
        raise CheckpointError(f"{error}, and no shipped prior has that name ({names})") from None
    if "prior_config" not in state["identity"]:
        known = sorted(state["identity"])
        raise CheckpointError(f"{source} holds no prior (its identity: {known})")
    return prior_from_state(state["identity"]["prior_config"], state["model"], device)
