# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Checkpoints: a run's state written atomically with a checksum, read back safely and
checked on resume; the run's folder, checked and locked while a run trains in it.

Chapter 6 (`notebooks/06_training.ipynb`) saves one, loads it back and resumes from it; the
appendix "Training for real" shows the lock and the checksum at work.
"""

import hashlib
import os
from pathlib import Path

import torch

from vqvae_lite.safe_files import save_atomically

try:
    import fcntl  # Linux and macOS
except ImportError:  # Windows: a run's folder is not locked
    fcntl = None

FORMAT = "vqvae-lite checkpoint 3"  # 3: with the sha256 of its contents
REQUIRED = ("format", "identity", "train_config", "model", "step")
CHECKPOINT = "checkpoint.pt"  # the file a run keeps in its folder
LOCK = ".lock"  # in a run's folder, locked by the process that trains there


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, damaged, or does not belong to the run that asked
    for it; or its folder cannot take one."""


def checksum(state: dict) -> str:
    """sha256 over every tensor's bytes and every other value, dict keys in sorted order."""
    digest = hashlib.sha256()

    def add(name: str, value) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                add(f"{name}/{key}", value[key])
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                add(f"{name}/{i}", item)
        elif torch.is_tensor(value):
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            flat = value.detach().cpu().contiguous().reshape(-1)  # any layout -> values in order
            digest.update(flat.view(torch.uint8).numpy())  # (N,) -> its N * itemsize bytes
        else:
            digest.update(f"{name}={value!r}".encode())

    add("", state)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` and its checksum to `path` atomically, with chapter 0's `save_atomically`:
    a temporary file beside it, synced, then renamed.

    A crash mid-write leaves the previous checkpoint untouched, never half a file. A write that
    fails (a full disk, a folder gone) raises CheckpointError saying why, and also leaves the
    previous checkpoint as it was.
    """
    path = Path(path)
    contents = {"format": FORMAT, **state}
    contents["sha256"] = checksum(contents)
    try:
        save_atomically(contents, path)
    except (OSError, RuntimeError) as error:  # torch's writer fails with a RuntimeError
        raise CheckpointError(f"{path} could not be written ({write_failure(error)})") from error


def write_failure(error: BaseException) -> str:
    """Why a write failed, in a few words: the system's reason (such as 'No space left on
    device') where the chain of exceptions holds one, else the error's first line."""
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with `torch.load(weights_only=True)`: tensors and plain data only.

    Raises CheckpointError, and changes nothing on disk, if the file is missing, truncated,
    corrupt, damaged (its contents no longer match their checksum) or not a vqvae-lite
    checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    if state.pop("sha256", None) != checksum(state):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the checksum saved with them (a disk "
            "or copy error?). Resume from another copy of it, or start the run again."
        )
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return state


def config_differences(saved: dict, current: dict, keys: list[str] | None = None) -> list[str]:
    """The fields (all, or only `keys`) whose values differ, as 'name: saved -> current';
    nested dicts (a model configuration inside an identity) are compared field by field."""
    keys = sorted(set(saved) | set(current)) if keys is None else keys
    differences = []
    for key in keys:
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += [f"{key}.{d}" for d in config_differences(old, new)]
        elif old != new:
            differences.append(f"{key}: {old!r} -> {new!r}")
    return differences


def check_resumable(
    state: dict, identity: dict, train_config: dict, same_run: list[str], may_lower=()
) -> list[str]:
    """Raise CheckpointError unless the checkpoint has this identity (model, data) and, among
    the training settings, the same values for every field named in `same_run` and no higher
    value for any named in `may_lower`. Returns those lowered, as 'name: saved -> current'."""
    differences = config_differences(state["identity"], identity)
    differences += config_differences(state["train_config"], train_config, same_run)
    lowered = []
    for key in may_lower:
        old, new = state["train_config"][key], train_config[key]
        if new > old:
            differences.append(f"{key}: {old!r} -> {new!r} (a resume may lower it, not raise it)")
        elif new < old:
            lowered.append(f"{key}: {old!r} -> {new!r}")
    if differences:
        raise CheckpointError(
            "the checkpoint belongs to another run; these settings differ (saved -> now):\n  "
            + "\n  ".join(differences)
        )
    return lowered


def claim_folder(folder: str | Path):
    """Make `folder`, check that files can be written in it, and lock it for this process.

    Returns the open lock file: the lock holds until the file is closed or the process ends,
    however it ends (killed too). CheckpointError, before any training, if the folder cannot
    take files or another process holds it.
    """
    folder = Path(folder)
    probe = folder / f".write-test.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
        lock = open(folder / LOCK, "a+")
    except OSError as error:
        problem = "is a file" if folder.is_file() else f"is not writable ({error.strerror})"
        raise CheckpointError(
            f"{folder} {problem}: choose a folder where checkpoints can be written"
        ) from None
    if fcntl is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise CheckpointError(
                f"{folder} is in use: another training (pid {holder}) saves its checkpoints "
                "there. Wait for it to end, or choose another folder."
            ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
