"""Every notebook in notebooks/ runs top to bottom against the sample data, and none is committed
with outputs.

Each runs on its own copy of data/demo-capture (SHADOW_CAPTURE points the notebook at it), so the
diffs a notebook writes into its capture never touch the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SAMPLE = REPO / "data" / "demo-capture"
EXPECTED = {"explore_diffs.ipynb", "latency.ipynb", "baseline.ipynb"}
CELL_TIMEOUT_S = 90


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    assert {p.name for p in notebook_paths()} >= EXPECTED


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    dirty = [i for i, cell in enumerate(book.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = tmp_path / "demo-capture"
    shutil.copytree(SAMPLE, capture, ignore=shutil.ignore_patterns("diffs*", "report"))
    monkeypatch.setenv("SHADOW_CAPTURE", str(capture))
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}")
    errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    # Jupyter shows stderr as a red block: no progress bar (or anything else) may land there.
    stderr = [o.get("text", "") for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, stderr
    assert (capture / "diffs").is_dir() or path.name == "baseline.ipynb"  # the copy, not data/, got them
    assert nbformat.read(path, as_version=4).cells[1].get("outputs") == []  # the file itself is untouched
