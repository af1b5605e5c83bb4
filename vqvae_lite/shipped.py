# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The book's reference models, shipped inside the package: `pretrained("plain")` is chapter
6's model and `pretrained("default")` chapter 7's, each trained once at a full budget.

Each is a file of weights in `vqvae_lite/weights/` (the model's state, no optimiser) with an
entry in `manifest.json` there: the file's sha256, checked before the file is read, and its
provenance (the command that trained it, the commit, the hardware, the wall time, the images
seen and the test metrics). Chapter 6 (`notebooks/06_training.ipynb`) loads the plain model;
chapter 8's `shipped_priors` loads the priors from the same folder.
"""

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch

from vqvae_lite.checkpoint import CheckpointError
from vqvae_lite.model import VQVAE, ModelConfig
from vqvae_lite.train import load_model

WEIGHTS_FORMAT = "vqvae-lite weights 1"
MANIFEST = "manifest.json"


def weights_folder() -> Path:
    """The folder of the shipped weights, inside the installed package."""
    return Path(str(resources.files("vqvae_lite") / "weights"))


def manifest() -> dict:
    """name -> {"file", "sha256", "kind", "provenance"}, for every shipped model."""
    return json.loads((weights_folder() / MANIFEST).read_text(encoding="utf-8"))


def shipped_names(kind: str | None = None) -> list[str]:
    """The names of the shipped models, of one kind ("vqvae" or "prior") or all."""
    return sorted(name for name, entry in manifest().items() if kind in (None, entry["kind"]))


def shipped_entry(name: str, kind: str | None = None) -> dict:
    """The manifest's entry for `name`; a ValueError listing the shipped names if none."""
    entries = manifest()
    if name not in entries or kind not in (None, entries[name]["kind"]):
        names = ", ".join(shipped_names(kind))
        raise ValueError(f"no shipped {kind or 'model'} is named {name!r}; shipped: {names}")
    return entries[name]


def provenance(name: str) -> dict:
    """How a shipped model was made: command, commit, hardware, wall time, images seen,
    test metrics."""
    return shipped_entry(name)["provenance"]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_shipped(name: str, kind: str) -> dict:
    """The contents of a shipped file ({"format", "config", "weights", ...}), read with
    `torch.load(weights_only=True)` once its sha256 matches the manifest's."""
    path = weights_folder() / shipped_entry(name, kind)["file"]
    if not path.is_file():
        raise CheckpointError(f"the shipped weights {path} are missing: reinstall vqvae-lite")
    if file_sha256(path) != shipped_entry(name)["sha256"]:
        raise CheckpointError(
            f"{path} is damaged: its sha256 differs from the manifest's. Reinstall vqvae-lite."
        )
    contents = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(contents, dict) or contents.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path} is not a {WEIGHTS_FORMAT} file")
    return contents


def as_float32(weights: dict) -> dict:
    """A state dict with its floating tensors (float16 in the shipped files) in float32."""
    return {key: t.float() if t.is_floating_point() else t for key, t in weights.items()}


def shipped_vqvae(name: str, device: str | torch.device = "cpu") -> tuple[VQVAE, float]:
    """A shipped VQ-VAE (eval mode, channels-last) and its training images' pixel variance."""
    contents = read_shipped(name, "vqvae")
    model = VQVAE(ModelConfig(**contents["config"]))
    model.load_state_dict(as_float32(contents["weights"]))
    model = model.to(device, memory_format=torch.channels_last).eval()
    return model, contents["data_variance"]


def pretrained(name: str = "default", device: str | torch.device = "cpu") -> VQVAE:
    """A shipped VQ-VAE, ready to use in eval mode: "default" (chapter 7's EMA codebook with
    restarts, the command line's default) or "plain" (chapter 6's model)."""
    return shipped_vqvae(name, device)[0]


def load_vqvae(source: str | Path, device: str | torch.device = "cpu") -> tuple[VQVAE, float]:
    """A trained VQ-VAE and its data variance, from a checkpoint's path or a shipped name
    (a file of that name, if there is one, wins)."""
    if not Path(source).exists() and str(source) in shipped_names("vqvae"):
        return shipped_vqvae(str(source), device)
    try:
        return load_model(source, device)
    except CheckpointError as error:
        if Path(source).exists():
            raise
        names = ", ".join(shipped_names("vqvae"))
        raise CheckpointError(f"{error}, and no shipped model has that name ({names})") from None
