"""Write the package `vqvae_lite/` from the marked cells of the chapters in `notebooks/`.

Markers follow nbdev's convention, as the first line of a code cell:

    #| default_exp encoder     this notebook writes vqvae_lite/encoder.py
    #| export                  this cell goes into the notebook's default module
    #| export model            this cell goes into vqvae_lite/model.py instead

Each generated file starts with a line naming the notebook to edit. `__init__.py` is written by
hand and never touched. Usage:

    python tools/export.py              # regenerate vqvae_lite/
    python tools/export.py --check      # exit 1 if vqvae_lite/ differs from the notebooks
    python tools/export.py --out DIR    # write the modules into DIR instead
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = ROOT / "vqvae_lite"
HEADER = "# Generated from {notebook} by tools/export.py: edit the notebook.\n"
MARKER = re.compile(r"^#\|\s*(default_exp|export)\b\s*(\S*)\s*$")


def exported_modules(notebook: Path) -> dict[str, list[str]]:
    """Map module name -> list of cell sources (marker line removed) for one notebook."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    default, modules = None, {}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        if not lines or not (match := MARKER.match(lines[0])):
            continue
        kind, name = match.groups()
        if kind == "default_exp":
            default = name
            continue
        module = name or default
        if module is None:
            raise SystemExit(f"{notebook.name}: '#| export' before any '#| default_exp'")
        modules.setdefault(module, []).append("\n".join(lines[1:]).strip("\n"))
    return modules


def render(notebooks: list[Path]) -> dict[str, str]:
    """Map file name (e.g. 'encoder.py') -> full text, for every module the notebooks export."""
    files, owners = {}, {}
    for notebook in notebooks:
        for module, sources in exported_modules(notebook).items():
            if module in owners:
                raise SystemExit(
                    f"{module} is exported by both {owners[module]} and {notebook.name}"
                )
            owners[module] = notebook.name
            header = HEADER.format(notebook=f"notebooks/{notebook.name}")
            files[f"{module}.py"] = header + "\n\n\n".join(sources).rstrip() + "\n"
    return files


def generated_files(folder: Path) -> list[Path]:
    """Files in `folder` that this tool wrote (they start with the generated header)."""
    return [
        p
        for p in sorted(folder.glob("*.py"))
        if p.read_text(encoding="utf-8").startswith("# Generated from ")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    parser.add_argument(
        "--out", type=Path, default=PACKAGE, help="folder to write the modules into"
    )
    args = parser.parse_args(argv)
    files = render(sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    if args.check:
        drift = [
            name
            for name, text in files.items()
            if not (PACKAGE / name).is_file()
            or (PACKAGE / name).read_text(encoding="utf-8") != text
        ]
        drift += [p.name for p in generated_files(PACKAGE) if p.name not in files]
        for name in drift:
            print(f"vqvae_lite/{name} differs from the notebooks: run python tools/export.py")
        return 1 if drift else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in generated_files(args.out):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} modules to {args.out.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
