"""The package is generated from the notebooks: any hand edit or stale export fails here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vqvae_lite"


def test_package_matches_a_fresh_export(tmp_path):
    subprocess.run(
        [sys.executable, "tools/export.py", "--out", str(tmp_path)], cwd=ROOT, check=True
    )
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.py")}
    assert fresh, "the notebooks export no module"
    committed = {
        p.name: p.read_bytes()
        for p in PACKAGE.glob("*.py")
        if p.read_bytes().startswith(b"# Generated from ")
    }
    assert sorted(committed) == sorted(fresh), "generated modules and notebook exports differ"
    for name, text in fresh.items():
        assert committed[name] == text, f"vqvae_lite/{name} drifted: run python tools/export.py"


def test_every_module_but_init_is_generated():
    hand_written = [
        p.name
        for p in PACKAGE.glob("*.py")
        if p.name != "__init__.py" and not p.read_bytes().startswith(b"# Generated from ")
    ]
    assert hand_written == [], f"modules not generated from a notebook: {hand_written}"


def test_generated_files_name_their_notebook():
    for path in PACKAGE.glob("*.py"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        if first.startswith("# Generated from "):
            notebook = first.split()[3]
            assert (ROOT / notebook).is_file(), f"{path.name} names a missing notebook {notebook}"
