"""Files that are never seen half-written (chapter 0's `vqvae_lite.safe_files`): a save is the
old file or the new one, a failed save leaves nothing behind, a killed save's leftovers go with
the next save, and a value comes back only under the key it was saved with."""

import errno
import os

import pytest
import torch

from vqvae_lite.safe_files import load_under_key, save_atomically, save_under_key


def partial_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_a_value_comes_back_under_its_key_only(tmp_path):
    path = tmp_path / "made" / "here" / "cache.pt"  # the folders are created
    save_under_key(path, "codes-v1", {"codes": torch.arange(6).view(2, 3)})
    assert torch.equal(load_under_key(path, "codes-v1")["codes"], torch.arange(6).view(2, 3))
    assert load_under_key(path, "codes-v2") is None
    assert load_under_key(tmp_path / "missing.pt", "codes-v1") is None
    path.write_bytes(path.read_bytes()[:40])  # cut short
    assert load_under_key(path, "codes-v1") is None
    torch.save({"codes": 1}, path)  # a torch file, but not saved under a key
    assert load_under_key(path, "codes-v1") is None
    assert partial_files(path.parent) == []


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos"),
        OSError(errno.ENOSPC, "No space left on device"),
        KeyboardInterrupt(),
    ],
    ids=["torch.save on a full disk", "write error", "Ctrl-C"],
)
def test_a_failed_save_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint.pt"
    save_atomically({"step": 1}, path)
    real_save = torch.save

    def save_then_fail(contents, file):
        real_save(contents, file)  # some bytes reach the partial file first
        raise failure

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(type(failure)):
        save_atomically({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert partial_files(tmp_path) == []


def test_a_failed_rename_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomically({"step": 1}, path)

    def no_room(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_room)
    with pytest.raises(OSError, match="No space left"):
        save_atomically({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert partial_files(tmp_path) == []


def test_the_leftovers_of_killed_saves_go_with_the_next_save(tmp_path):
    path = tmp_path / "cache [v1].pt"  # a name with glob characters
    for pid in (101, 202):
        (tmp_path / f".{path.name}.{pid}.partial").write_bytes(b"half a file")
    other = tmp_path / ".another.pt.303.partial"  # another file's save: not ours to remove
    other.write_bytes(b"half a file")
    save_atomically([1, 2, 3], path)
    assert torch.load(path, weights_only=True) == [1, 2, 3]
    assert partial_files(tmp_path) == [other.name]
