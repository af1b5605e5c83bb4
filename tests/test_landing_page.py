"""The landing page's chapter map agrees with the package the chapters generate.

`book/intro.md` has one row per chapter, which links the chapter's notebook and names the modules
of `vqvae_lite/` that it writes. A generated module starts with the line
`# Generated from notebooks/NN_name.ipynb ...`, so the package itself says which chapter wrote it.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANDING = ROOT / "book" / "intro.md"
PACKAGE = ROOT / "vqvae_lite"
NOTEBOOKS = ROOT / "notebooks"
GENERATED = re.compile(r"# Generated from (notebooks/\S+\.ipynb)")
MODULE_NAME = re.compile(r"`([A-Za-z_]\w*\.py)`")  # a bare file name, as the map writes modules
ROW_CHAPTER = re.compile(r"^\|\s*\{doc\}`[^`<]*<\.\./(notebooks/[^>]+)>`\s*\|")


def generated_modules() -> dict[str, str]:
    """File name -> the notebook it is generated from, for every generated module."""
    found = {}
    for path in sorted(PACKAGE.glob("*.py")):
        first_line = path.read_text(encoding="utf-8").partition("\n")[0]
        if first_line.startswith("# Generated from"):
            match = GENERATED.match(first_line)
            assert match, f"{path.name}: a header that names no notebook: {first_line!r}"
            found[path.name] = match.group(1)
    return found


def chapter_map(text: str) -> dict[str, list[str]]:
    """Notebook (as `notebooks/NN_name.ipynb`) -> the modules its row of the map names."""
    rows = {}
    for line in text.splitlines():
        if match := ROW_CHAPTER.match(line):
            notebook = match.group(1) + ".ipynb"
            assert notebook not in rows, f"the chapter map has two rows for {notebook}"
            modules_cell = line.rstrip().rstrip("|").rsplit("|", 1)[1]
            rows[notebook] = MODULE_NAME.findall(modules_cell)
    return rows


def landing_text() -> str:
    return LANDING.read_text(encoding="utf-8")


def test_package_has_generated_modules():
    """The checks below would pass on an empty package: make sure they see the real one."""
    assert len(generated_modules()) >= 10, f"few generated modules in {PACKAGE}"


def test_every_module_the_landing_page_names_exists():
    named = set(MODULE_NAME.findall(landing_text()))
    missing = sorted(name for name in named if not (PACKAGE / name).is_file())
    assert not missing, f"book/intro.md names modules that vqvae_lite/ does not have: {missing}"


def test_every_generated_module_is_on_the_landing_page():
    named = set(MODULE_NAME.findall(landing_text()))
    absent = sorted(set(generated_modules()) - named)
    assert not absent, f"generated modules that book/intro.md does not name: {absent}"


def test_chapter_map_has_a_row_for_every_chapter():
    rows = chapter_map(landing_text())
    chapters = sorted(f"notebooks/{path.name}" for path in NOTEBOOKS.glob("[0-9]*.ipynb"))
    assert sorted(rows) == chapters, (
        f"the chapter map of book/intro.md lacks {sorted(set(chapters) - set(rows))} "
        f"and has rows for no chapter: {sorted(set(rows) - set(chapters))}"
    )


def test_each_module_is_in_the_row_of_the_chapter_that_writes_it():
    rows = chapter_map(landing_text())
    misplaced = []
    for module, notebook in generated_modules().items():
        in_rows = [row for row, modules in rows.items() if module in modules]
        if in_rows != [notebook]:
            misplaced.append(f"{module} (from {notebook}) is in the rows of {in_rows}")
    assert not misplaced, "book/intro.md's chapter map:\n" + "\n".join(misplaced)
