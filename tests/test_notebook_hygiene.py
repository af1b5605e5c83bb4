"""Every chapter is committed as one clean top-to-bottom run, with no machine-specific paths."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MYST_LABEL = re.compile(r"^\s*\([\w-]+\)=[ \t]*\n")  # `(name)=` before a heading
MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Z]:\\\\|site-packages)")


def repository_url() -> str:
    match = re.search(r"^\s*url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.MULTILINE)
    assert match, "_config.yml has no repository url"
    return match.group(1)


def code_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_executed_once_top_to_bottom(path):
    counts = [cell["execution_count"] for cell in code_cells(path)]
    assert None not in counts, f"{path.name}: {counts.count(None)} code cells never executed"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: counts {counts} not 1..n"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_errors_in_outputs(path):
    for cell in code_cells(path):
        kinds = [output["output_type"] for output in cell.get("outputs", [])]
        assert "error" not in kinds, (
            f"{path.name}: a cell stored an error:\n{''.join(cell['source'])}"
        )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_machine_paths(path):
    hits = sorted(set(MACHINE_PATH.findall(path.read_text(encoding="utf-8"))))
    assert hits == [], f"{path.name} holds machine-specific paths: {hits}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_first_cell_installs_on_colab_from_the_configured_repository(path):
    first = "".join(code_cells(path)[0]["source"])
    assert "google.colab" in first, f"{path.name}: the first code cell has no Colab install"
    assert repository_url() in first, f"{path.name}: Colab install does not use {repository_url()}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_follows_the_chapter_skeleton(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    markdown = MYST_LABEL.sub("", markdown, count=1)  # a cross-reference target may come first
    assert markdown.lstrip().startswith("# "), f"{path.name} does not open with a title"
    for heading in ("## Summary", "## Exercises"):
        assert heading in markdown, f"{path.name} has no '{heading}' section"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_listed_in_the_table_of_contents(path):
    assert f"notebooks/{path.stem}" in (ROOT / "_toc.yml").read_text()


EXERCISE_NUMBER = re.compile(r"^(?:\*\*)?(\d+)\.(?:\*\*)? ", re.MULTILINE)  # "3. " or "**3.** "


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_exercises_are_numbered_one_to_n(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    exercises = markdown.split("## Exercises", 1)[1]
    numbers = [int(n) for n in EXERCISE_NUMBER.findall(exercises)]
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: exercises {numbers}"
