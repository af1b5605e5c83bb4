"""Execute chapters in place, keeping tags and widget state; export the package before and after.

    python tools/run_notebooks.py notebooks/01_encoder.ipynb [more.ipynb ...]
    python tools/run_notebooks.py --all

Each notebook runs in a fresh kernel with `notebooks/` as its working folder, exactly as a
reader's Jupyter or `pytest --nbval` runs it, so execution counts go 1..n in order. The package
is exported first, because a chapter imports what earlier chapters (and its own export cells)
put into `vqvae_lite/`.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def run(path: Path, timeout: int) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["kernelspec"] = KERNELSPEC
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
    )
    start = time.perf_counter()
    client.execute()
    notebook.metadata.get("language_info", {}).pop("version", None)
    nbformat.write(notebook, path)
    print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every chapter, in order")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args()
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) if args.all else args.notebooks
    export = [sys.executable, str(ROOT / "tools" / "export.py")]
    subprocess.check_call(export)
    for path in paths:
        run(path.resolve(), args.timeout)
    return subprocess.call(export)


if __name__ == "__main__":
    sys.exit(main())
