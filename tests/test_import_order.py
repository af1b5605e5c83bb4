"""Chapter order is import order: a module generated from chapter N imports only modules of
chapters up to N, and no modules import each other (directly or round a longer cycle), not even
under `if __name__ == "__main__":`. Each generated module stays short enough to read top to
bottom.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vqvae_lite"


def chapter_of(path: Path) -> int:
    """The number of the notebook a generated module names in its first line."""
    notebook = path.read_text(encoding="utf-8").splitlines()[0].split()[3]  # notebooks/NN_x
    return int(Path(notebook).name[:2])


MOST_LINES = 300  # a module longer than this holds more than one idea


def package_imports(path: Path) -> set[str]:
    """The vqvae_lite modules that `path` imports, anywhere in it: `import vqvae_lite.x`,
    `from vqvae_lite.x import y` and `from vqvae_lite import x`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vqvae_lite."):
            found.add(node.module.split(".")[1])
        if isinstance(node, ast.ImportFrom) and node.module == "vqvae_lite":
            found.update(a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file())
        if isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("vqvae_lite.")
            )
    return found


GENERATED = {
    p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.read_bytes().startswith(b"# Generated")
}
IMPORTS = {name: package_imports(path) for name, path in GENERATED.items()}


def test_the_package_has_generated_modules_with_imports():
    assert len(GENERATED) > 5 and any(IMPORTS.values())


@pytest.mark.parametrize("module", sorted(GENERATED))
def test_a_module_imports_no_later_chapter(module):
    chapter = chapter_of(GENERATED[module])
    later = {
        other: chapter_of(GENERATED[other])
        for other in IMPORTS[module]
        if other in GENERATED and chapter_of(GENERATED[other]) > chapter
    }
    assert not later, f"{module}.py (chapter {chapter}) imports later chapters: {later}"


def test_no_modules_import_each_other():
    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for other in IMPORTS.get(start, ()):
            if other == target or (other not in seen and reaches(other, target, seen | {other})):
                return True
        return False

    cycles = sorted(m for m in IMPORTS if reaches(m, m, {m}))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize("module", sorted(GENERATED))
def test_a_module_is_short_enough_to_read_top_to_bottom(module):
    lines = len(GENERATED[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MOST_LINES, f"{module}.py has {lines} lines: split it by its ideas"
