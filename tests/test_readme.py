"""The README as a new user reads it: its quick start runs as written, its claims match the code and the data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import ROOT

from tmd_nb.notebook.magics import TmdMagics

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_quick_start_runs_as_written_in_a_fresh_directory(tmp_path: Path) -> None:
    """The quick start and the exchange examples, in order, in an empty folder: no sample file needed."""
    blocks = _python_blocks(_section("Quick start")) + _python_blocks(_section("Exchange: X3P and Gwyddion"))
    assert len(blocks) >= 3
    script = tmp_path / "quick_start.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    work = tmp_path / "fresh"
    work.mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error::UserWarning"}
    done = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    written = {p.name for p in work.iterdir()}
    assert {"scan.npz", "scan.npy", "surface.tmd", "surface.npz", "surface.x3p", "surface.gwy"} <= written


def test_quick_start_uses_the_unit_keys_and_names_the_shorthand() -> None:
    quick = _section("Quick start")
    assert '"lateral_unit": "um"' in quick and '"height_unit": "um"' in quick
    assert '"units"' in quick and "shorthand" in quick
    assert "v2_Surface.tmd" not in "".join(line.split("#")[0] for line in "".join(_python_blocks(quick)).splitlines())


def test_load_ext_bullet_names_every_magic() -> None:
    bullet = next(line for line in _section("Magics").splitlines() if line.startswith("- `%load_ext tmd_nb` registers"))
    bullet_text = _section("Magics").split(bullet, 1)[1].split("\n- ", 1)[0]
    named = set(re.findall(r"`%(tmd_\w+)`", bullet + bullet_text))
    assert named == set(TmdMagics.magics["line"]), named


def test_speed_figures_are_those_of_results_json() -> None:
    """Every row of the README's speed table is the committed run the docs' benchmarks page plots."""
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    big = "synthetic 4000x4000 float32"
    rows = {r["op"]: r for r in results["rows"] if r["data"] == big}
    speed = _section("Speed")
    table = [line for line in speed.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in rows]
    assert len(table) >= 6, speed
    for line in table:
        op, baseline, shown_speed, shown_size = (cell.strip() for cell in line.split("|")[1:5])
        ours, theirs = rows[op]["ours"], rows[op]["theirs"]
        label = theirs["label"]
        assert baseline == f"`{label.removesuffix(' + fsync')}`" + (" + fsync" if label.endswith(" + fsync") else "")
        assert shown_speed == f"{theirs['seconds'] / ours['seconds']:.2f}x", line
        if shown_size:
            assert shown_size == f"{ours['file_bytes'] / theirs['file_bytes']:.3f}", line
    npy = next(line for line in table if line.startswith("| NPY save |"))
    assert np.isclose(float(npy.split("|")[3].strip()[:-1]), 0.97)  # the figure benchmarks/README.md discusses
    assert results["machine"].split(";")[0].split(",")[0] in speed  # the same machine is named


def test_exchange_and_instrument_figures_are_those_of_results_json() -> None:
    """The README's X3P/GWY table, its instrument-file range and its convert figure are the committed run's."""
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    rows = {(r["data"], r["op"]): r for r in results["rows"]}
    speed = _section("Speed")
    table = [line for line in speed.splitlines() if line.startswith(("| X3P", "| GWY"))]
    assert len(table) == 10, table
    for line in table:
        operation, baseline, shown_speed, shown_size = (cell.strip() for cell in line.split("|")[1:5])
        op, dtype = operation.rsplit(", ", 1)
        r = rows[(f"scan-like 2000x2000 {dtype}, mm", op)]
        assert baseline == f"`{r['theirs']['label']}`", line
        assert shown_speed == f"{r['theirs']['seconds'] / r['ours']['seconds']:.2f}x", line
        if shown_size:
            assert shown_size == f"{r['ours']['file_bytes'] / r['theirs']['file_bytes']:.3f}", line
    vendor = {
        r["data"]: r["ours"]["seconds"] / r["theirs"]["seconds"]
        for r in results["rows"]
        if r["op"] == "load vs ST's read"
    }
    binary = [v for d, v in vendor.items() if not d.startswith("xyz")]
    assert f"{min(binary):.2f}-{max(binary):.2f}x" in speed
    assert f"{next(v for d, v in vendor.items() if d.startswith('xyz')):.2f}x" in speed
    warm = next(c for c in results["convert"] if c["label"] == "2 workers, server running")
    one = next(c for c in results["convert"] if c["workers"] == 1 and not c["label"].startswith("tmd-nb"))
    assert f"{one['seconds'] / warm['seconds']:.2f}x" in speed and f"{warm['cpu'] / warm['seconds']:.2f}" in speed
