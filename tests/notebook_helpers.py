"""Running the example notebooks and checking what they show, shared by test_notebooks and test_binder.

:func:`run_notebook` executes a notebook with nbclient; :func:`check_expected_errors` holds it to
its ``raises-exception`` tags, and :data:`CHECKS` holds, per notebook, the outputs that say it
showed the right thing. test_notebooks runs them in the development environment, test_binder in
a fresh environment built as mybinder.org builds it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# The ordered set the README promises; a missing one fails the suite, an extra one is run too.
EXPECTED = (
    "01_quickstart",
    "02_magics",
    "03_export_panel",
    "04_scan_files",
    "05_large_heightmaps",
    "06_exchange_formats",
    "07_archives_and_large_maps",
    "08_instrument_files",
    "09_xarray",
)
ALL = sorted(set(EXPECTED) | {p.stem for p in NOTEBOOKS.glob("*.ipynb")})
CELL_TIMEOUT = 180  # seconds, per cell (nbclient)
ERROR_TAG = "raises-exception"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def notebook_path(stem: str) -> Path:
    path = NOTEBOOKS / f"{stem}.ipynb"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the example set is {', '.join(EXPECTED)}")
    return path


def copy_notebooks(dest: Path) -> Path:
    """Copy ``notebooks/`` (without checkpoints or saved height maps) to ``dest``; return the copy."""
    target = dest / "notebooks"
    shutil.copytree(
        NOTEBOOKS, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.npz", "*.npy", "*.tmd", "__pycache__")
    )
    return target


def run_notebook(path: Path, **client_options: Any) -> tuple[nbformat.NotebookNode, dict[int, dict[str, Any]]]:
    """Execute the notebook at ``path`` in its own folder.

    Returns the notebook with its outputs and the error replies by cell index (``ename``,
    ``evalue``; IPython shows a ``UsageError`` on stderr, so the reply is where the error is
    recorded). Raises nbclient's ``CellExecutionError`` for an error in any cell not tagged
    raises-exception, and its ``CellTimeoutError`` for a cell that runs past ``CELL_TIMEOUT``.
    """
    nb = nbformat.read(path, as_version=4)
    errors: dict[int, dict[str, Any]] = {}

    def record(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        errors[cell_index] = execute_reply["content"]

    options: dict[str, Any] = {"timeout": CELL_TIMEOUT, "kernel_name": "python3", "on_cell_error": record}
    options.update(client_options)
    client = NotebookClient(nb, resources={"metadata": {"path": str(path.parent)}}, **options)
    client.execute()
    return nb, errors


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def is_tagged_error(cell: nbformat.NotebookNode) -> bool:
    return ERROR_TAG in cell.get("metadata", {}).get("tags", [])


def stream_text(nb: nbformat.NotebookNode, name: str = "stdout") -> str:
    return "".join(o.text for c in code_cells(nb) for o in c.outputs if o.output_type == "stream" and o.name == name)


def mime_outputs(nb: nbformat.NotebookNode, mime: str) -> list[Any]:
    return [
        o.data[mime]
        for c in code_cells(nb)
        for o in c.outputs
        if o.output_type in ("display_data", "execute_result") and mime in o.data
    ]


def check_expected_errors(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]], stem: str) -> None:
    """Cells tagged raises-exception must raise (else the 'what errors look like' text lies); no other may."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if is_tagged_error(cell):
            assert i in errors, f"{stem} cell {i} is tagged {ERROR_TAG} but raised nothing:\n{cell.source}"
        else:
            assert i not in errors, f"{stem} cell {i} failed: {errors[i].get('ename')}: {errors[i].get('evalue')}"


# --------------------------------------------------------------------------- per-notebook checks


def check_quickstart(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    assert "round trip: True" in out
    assert "identical: True" in out and "same content: True" in out
    assert re.search(r"^height map identical: True \| mask identical: True$", out, re.M), out
    assert "MetadataNotStoredWarning:" in out  # NPY with metadata says what it dropped
    assert "FormatError:" in out and "broken.npz" in out
    assert not re.search(r"(same|identical): False", out), out
    assert mime_outputs(nb, "image/png"), "the coin is not plotted"


def check_magics(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    assert re.search(
        r"^Saved surface \(200 x 300 float32, 5 metadata keys\) to \S*surface\.npz \(.*NPZ\) in ", out, re.M
    ), out
    assert re.search(r"^Loaded run1\.npz into run1 \(200 x 300 float32, 4 metadata keys\)", out, re.M), out
    assert "identical: True" in out
    assert "'note': 'first pass'" in out and "'calibrated': True" in out  # -m values keep their types
    assert len(errors) >= 4
    shown = stream_text(nb, "stderr")
    for error in errors.values():  # user mistakes are one-line UsageErrors, shown without a traceback
        assert error["ename"] == "UsageError", error
        message = error["evalue"].strip()
        assert message and "\n" not in message, error
        assert f"UsageError: {message}\n" in shown
    assert "Traceback" not in shown
    assert any("already exists" in e["evalue"] and "-f" in e["evalue"] for e in errors.values())
    assert mime_outputs(nb, "text/html"), "%tmd_load shows no rich display"


def check_panel(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    assert mime_outputs(nb, WIDGET_MIME), "the export panel notebook displays no widget"


def check_scan_files(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    assert "b'Binary TrueMap Data File v2.0\\r\\n\\x00'" in out
    assert out.count("heights identical: True") >= 3
    assert "all metadata identical: True" in out
    assert len(re.findall(r"^sample_\d\.tmd .* identical=True$", out, re.M)) == 3, out
    assert "False" not in out
    assert mime_outputs(nb, "image/png"), "the scan is not plotted"


def check_large(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    assert "identical: False" not in out
    assert out.count("identical: True") == 7  # six formats + the memory-mapped window
    tables = [t for t in mime_outputs(nb, "text/markdown") if "| format |" in t]
    assert len(tables) == 1, "no results table"
    rows = {line.split("|")[1].strip(): line for line in tables[0].splitlines()[2:]}
    assert set(rows) == {"NPY", "NPZ stored", "NPZ compressed", "NPZ smallest", "TMD", "np.savez_compressed"}
    for line in rows.values():  # measured, not placeholders: sizes and ratios consistent with 64 MB
        size_mb, ratio = (float(v) for v in line.split("|")[2:4])
        assert size_mb > 0 and abs(size_mb * ratio - 64.0) < 0.5, line
    assert mime_outputs(nb, "image/png"), "no bar chart"


def check_archives(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    summaries = re.findall(r"^(\d+) converted, (\d+) skipped \(already done\), (\d+) failed$", out, re.M)
    assert len(summaries) == 3, out
    (converted, skipped, failed), again, on_cluster = summaries
    assert int(converted) >= 16 and skipped == "0" and failed == "1"
    assert again == ("0", converted, "1") and on_cluster == (converted, "0", "1")
    assert "FormatError: " in out and "identical: True" in out
    assert "window identical: True" in out and "False" not in out
    assert "['tmd_nb', 'deflate'] (4096, 8192) float32" in out
    assert mime_outputs(nb, WIDGET_MIME), "convert showed no progress bar widget"
    assert mime_outputs(nb, "image/png"), "the window is not plotted"


def check_xarray(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    assert "round trip identical: True" in out and out.count("heights identical: True") == 2
    assert "crop (50, 50) {'x_length': 100.0, 'y_length': 100.0, 'x_offset': 200.0, 'y_offset': 0.0}" in out
    assert re.search(r"^Sq = \d+\.\d\d nm = 0\.\d{5} µm$", out, re.M), out
    assert "'lateral_unit': 'mm', 'height_unit': 'um'" in out and "same surface: True" in out
    assert "dask.array.core (8192, 8192) float32" in out
    assert "False" not in out
    assert len(mime_outputs(nb, "image/png")) == 2, "the map, the profile, the overview and the window are not plotted"


def check_instruments(nb: nbformat.NotebookNode, errors: dict[int, dict[str, Any]]) -> None:
    out = stream_text(nb)
    assert "0: ZSensor         (256, 256)  unit nm" in out and "1: AmplitudeError  (256, 256)  unit (none)" in out
    assert "KeyError: " in out and "its channels are 0: 'ZSensor'" in out
    assert "Digital Surf SUR (484, 563)" in out and "missing points: 117" in out
    assert re.search(r"^(\d+) converted, 0 skipped \(already done\), 0 failed$", out, re.M), out
    assert "same heights: True" in out
    assert mime_outputs(nb, "image/png"), "the two scans are not drawn"


CHECKS: dict[str, Callable[[nbformat.NotebookNode, dict[int, dict[str, Any]]], None]] = {
    "01_quickstart": check_quickstart,
    "02_magics": check_magics,
    "03_export_panel": check_panel,
    "04_scan_files": check_scan_files,
    "05_large_heightmaps": check_large,
    "07_archives_and_large_maps": check_archives,
    "08_instrument_files": check_instruments,
    "09_xarray": check_xarray,
}
