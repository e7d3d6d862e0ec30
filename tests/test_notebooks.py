"""The example notebooks are the manual: each one must run top to bottom in a real Jupyter kernel.

Every notebook in ``notebooks/`` is executed with nbclient in a fresh ``python3`` kernel, on a
copy of the folder under ``tmp_path`` (so nothing is written into the repository) and with
``TMPDIR`` pointing under ``tmp_path`` too (the notebooks put their files in ``tempfile``
folders). A cell may fail only if it is tagged ``raises-exception``, and such a cell *must*
fail: it is there to show what an error looks like. A few outputs per notebook are checked
(``notebook_helpers.CHECKS``, which test_binder runs too), so a notebook that runs but shows
the wrong thing fails as well.

The committed notebooks carry no outputs and have prose between their code cells.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from conftest import require
from notebook_helpers import (
    ALL,
    CHECKS,
    EXPECTED,
    NOTEBOOKS,
    ROOT,
    check_expected_errors,
    code_cells,
    copy_notebooks,
    notebook_path,
    run_notebook,
)


def test_the_expected_notebooks_are_there() -> None:
    missing = [s for s in EXPECTED if not (NOTEBOOKS / f"{s}.ipynb").is_file()]
    assert not missing, f"missing from {NOTEBOOKS}: {missing}"


@pytest.mark.parametrize("stem", ALL)
def test_committed_without_outputs(stem: str) -> None:
    nb = nbformat.read(notebook_path(stem), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(code_cells(nb)):
        assert cell.outputs == [], f"{stem}: code cell {i} has saved outputs; clear them before committing"
        assert cell.execution_count is None, f"{stem}: code cell {i} has an execution count"


@pytest.mark.parametrize("stem", ALL)
def test_prose_between_code_cells(stem: str) -> None:
    nb = nbformat.read(notebook_path(stem), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), f"{stem} has no title cell"
    kinds = "".join("c" if c.cell_type == "code" else "m" for c in nb.cells if c.source.strip())
    assert len(code_cells(nb)) >= 3 and kinds.count("m") >= 3, f"{stem}: cell kinds {kinds}"
    assert "cccc" not in kinds, f"{stem}: four code cells in a row without prose ({kinds})"


@pytest.mark.parametrize("stem", ALL)
def test_units_follow_the_one_convention(stem: str) -> None:
    """Units are ``lateral_unit``/``height_unit`` strings, or ``units`` as their shorthand: never a dict of both."""
    nb = nbformat.read(notebook_path(stem), as_version=4)
    for i, cell in enumerate(code_cells(nb)):
        for match in re.finditer(r"""["']units["']\s*:\s*(\S)""", cell.source):
            assert match.group(1) in "\"'", f"{stem} code cell {i}: 'units' must be a unit string:\n{cell.source}"
        assert not re.search(r"""["'](lateral|height)["']\s*:""", cell.source), f"{stem} code cell {i}"


@pytest.mark.slow
@pytest.mark.parametrize("stem", ALL)
def test_notebook_runs(stem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = notebook_path(stem)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the kernel inherits it: tempfile folders stay under tmp_path
    if stem == "08_instrument_files":  # the copy is not beside shared/: tell it where the samples are
        samples = ROOT.parent / "shared" / "data" / "instruments"
        require(samples.is_dir(), f"instrument samples not found at {samples} (they live in shared/data/instruments)")
        monkeypatch.setenv("TMD_NB_INSTRUMENT_SAMPLES", str(samples))
    copy = copy_notebooks(tmp_path) / source.name

    nb, errors = run_notebook(copy)  # a cell that hangs fails at CELL_TIMEOUT

    check_expected_errors(nb, errors, stem)
    check = CHECKS.get(stem)
    if check is not None:
        check(nb, errors)
