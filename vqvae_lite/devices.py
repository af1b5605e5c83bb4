# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""The chip that trains: a device name resolved and checked, described for the record of a
run, and bf16 autocast where the chip computes it natively.

Chapter 6 (`notebooks/06_training.ipynb`) explains them; chapter 2 why the quantiser's
distances stay in float32 under any autocast.
"""

import platform
from contextlib import nullcontext
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when a GPU is present, else cpu; any other name, checked: a device that
    does not exist here, or whose tensors hold no data (`meta`), is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.zeros(1, device=device).cpu()  # a tensor made there, and read back
    except (RuntimeError, AssertionError, NotImplementedError, ImportError) as error:
        here = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        raise ValueError(
            f"device {name!r} is not usable here ({str(error).splitlines()[0]}); "
            f"devices on this machine: {', '.join(here)}"
        ) from None
    return device


def hardware(device: torch.device) -> str:
    """A short description of the chip that trains, for the record of a run."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else name
    threads = torch.get_num_threads()
    return f"CPU ({name}), {threads} thread{'' if threads == 1 else 's'}"


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on GPUs with native bf16; elsewhere nothing changes.

    The quantiser's distances and the losses switch autocast off themselves, so they stay in
    float32 under any autocast.
    """
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if enabled and native:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
