"""The benchmark script runs end to end and prints its table (speed is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_bench_quick_prints_the_table(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("machine: ")
    assert "numpy " in out and "isal " in out
    for op in (
        "NPZ save, compressed (default)",
        "NPZ load, numpy's compressed file",
        "NPZ save, stored",
        "NPY save",
        "NPY load",
        "TMD load",
    ):
        assert op in out, op
    for baseline in ("np.savez_compressed", "np.load", "np.save + fsync", "np.fromfile"):
        assert baseline in out, baseline
    rows = [line for line in out.splitlines() if line.startswith("synthetic 512x512 float32 ")]
    assert len(rows) >= 10
    for line in rows:  # every row has a speed ratio against numpy
        assert line.rstrip().split("|")[-1].split()[0].endswith("x")
    for level in ("balanced", "smallest"):  # the ladder: a row per level and data set, and its targets
        assert f"NPZ save, level={level}" in out
        assert f"level='{level}' file" in out
    ladder = out.split("Ladder (")[1].split("Targets (")[0]
    assert "fastest (default)" in ladder and "  synthetic 512x512 float32 " in ladder
    assert "Targets (on synthetic 512x512 float32)" in out
    assert list(tmp_path.iterdir()) == []  # the temporary files are gone


@pytest.mark.slow
def test_bench_json_keeps_every_row(tmp_path):
    """``--json`` writes what the table shows, for the docs' benchmark plot."""
    out = tmp_path / "results.json"
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--dir", str(work), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert "numpy " in results["machine"] and results["repeats"] == 1
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("synthetic 512x512 float32 ")]
    rows = [r for r in results["rows"] if r["data"] == "synthetic 512x512 float32"]
    assert [r["op"] for r in rows] == [line[41:76].strip() for line in table_rows]
    for r in rows:
        assert r["ours"]["seconds"] > 0 and r["theirs"]["seconds"] > 0
        assert r["ours"]["nbytes"] == r["theirs"]["nbytes"] == 512 * 512 * 4
