"""convert against hand-edited manifests, odd names and hostile folders: it replaces only what it wrote."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tmd_nb import batch

UNSURE = "a file convert cannot tell it wrote is there at the output name; not replaced (overwrite=True replaces it)"


@pytest.fixture
def scan(tmp_path, tmd_samples) -> Path:
    src = tmp_path / "scans"
    src.mkdir()
    shutil.copy(tmd_samples / "v2_Dime.tmd", src / "a.tmd")
    return src


def write_manifest(out: Path, *rows: list[str]) -> None:
    with (out / batch.MANIFEST).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(batch.FIELDS)
        writer.writerows(rows)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("same_source", [False, True])
def test_a_started_line_does_not_make_a_users_file_ours(scan, tmp_path, same_source):
    """A "started" line (hand-made, or older than the file) names no content: a user's own NPZ stays."""
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "a.npz", mine=np.arange(5))
    before = digest(out / "a.npz")
    st = (scan / "a.tmd").stat()
    size, mtime = (str(st.st_size), str(st.st_mtime_ns)) if same_source else ("1", "1")
    write_manifest(out, [str(scan / "a.tmd"), size, mtime, "tmd", "", str(out / "a.npz"), "started", "", ""])
    report = batch.convert(scan, out, jobs=1, progress=False)
    assert report.failed == [(str(scan / "a.tmd"), UNSURE)]
    assert digest(out / "a.npz") == before


def test_a_started_line_for_an_output_of_the_unchanged_source_is_skipped(scan, tmp_path):
    """The honest case: a run killed between the rename and its "converted" line is resumed, not refused."""
    out = tmp_path / "out"
    batch.convert(scan, out, jobs=1, progress=False)
    st = (scan / "a.tmd").stat()
    line = [str(scan / "a.tmd"), str(st.st_size), str(st.st_mtime_ns), "", "", str(out / "a.npz"), "started", "", ""]
    write_manifest(out, line)
    before = digest(out / "a.npz")
    report = batch.convert(scan, out, jobs=1, progress=False)
    assert report.skipped == [(str(scan / "a.tmd"), str(out / "a.npz"))]
    assert digest(out / "a.npz") == before
