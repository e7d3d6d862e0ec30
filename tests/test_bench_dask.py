"""The scale-out benchmark runs end to end and prints its three sections (speed is not asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, SHARED_TMD, require


@pytest.mark.slow
def test_bench_dask_quick_prints_every_section(tmp_path):
    require(any(SHARED_TMD.glob("*.tmd")), f"sample scans not found at {SHARED_TMD}")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_dask.py"), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^  Dask speed / in-memory speed: \d+\.\d\dx; file \d+ MB$", out, re.M), out
    assert re.search(
        r"^  Dask save's peak RSS growth, X3P / NPZ: \d+\.\d\dx \(\d+ / \d+ MiB\); X3P file \d+ MB$", out, re.M
    ), out
    assert re.search(
        r"^  Dask save's peak RSS growth, GWY / NPZ: \d+\.\d\dx \(\d+ / \d+ MiB\); GWY file \d+ MB \(\d+x\d+\)$",
        out,
        re.M,
    ), out
    assert re.search(r"^  median [\d.]+ ms, slowest [\d.]+ ms, RSS growth [\d.]+ MiB$", out, re.M), out
    for name in ("plain loop: load + export_to_npz", "convert(jobs=2)", "convert(client=LocalCluster of 2 workers)"):
        assert re.search(rf"^  {re.escape(name)} +[\d.]+ files/s +[\d.]+x$", out, re.M), out
    assert list(tmp_path.iterdir()) == []  # its files are removed
