"""convert against hand-edited manifests, odd names and hostile folders: it replaces only what it wrote."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from tmd_nb import batch

NOT_OURS = "a file convert did not write is there at the output name; not replaced (overwrite=True replaces it)"
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


def test_a_manifest_that_is_a_symbolic_link_is_refused(scan, tmp_path):
    """Appending through the link would change a file outside the output folder."""
    out = tmp_path / "out"
    out.mkdir()
    user = tmp_path / "user.csv"
    user.write_bytes(b"")
    (out / batch.MANIFEST).symlink_to(user)
    message = f"{str(out / batch.MANIFEST)!r} is a symbolic link, not a tmd_nb convert manifest; move it away"
    with pytest.raises(ValueError) as caught:
        batch.convert(scan, out, jobs=1, progress=False)
    assert str(caught.value) == message
    assert user.read_bytes() == b""
    assert not (out / "a.npz").exists()


def test_a_second_format_into_the_same_folder_keeps_the_first_outputs_claimed(scan, tmp_path):
    """The manifest is tidied per source and output: the NPZ stays convert's own after a TMD run."""
    out = tmp_path / "out"
    assert batch.convert(scan, out, jobs=1, progress=False).ok
    assert batch.convert(scan, out, format="gwy", jobs=1, progress=False).ok
    again = batch.convert(scan, out, jobs=1, progress=False)
    assert again.ok and again.skipped == [(str(scan / "a.tmd"), str(out / "a.npz"))]
    assert {(r["output"], r["status"]) for r in batch.read_manifest(out / batch.MANIFEST)} == {
        (str(out / "a.npz"), "skipped"),
        (str(out / "a.gwy"), "converted"),
    }


def test_an_output_folder_in_the_sources_is_left_out_through_a_symbolic_link(scan, tmp_path):
    """OUT a link to SRC/conv: the outputs there are not taken as sources on a rerun (no conv/conv/...)."""
    (scan / "conv").mkdir()
    out = tmp_path / "out"
    out.symlink_to(scan / "conv")
    assert batch.convert(scan, out, jobs=1, progress=False).converted
    again = batch.convert(scan, out, jobs=1, progress=False)
    assert again.ok and not again.converted
    assert sorted(os.listdir(scan / "conv")) == ["a.npz", batch.MANIFEST]


def test_file_names_of_any_bytes_survive_the_manifest(scan, tmp_path):
    """Newlines, commas, quotes, a leading '=' and bytes that are not UTF-8: skipped on a rerun, read by pandas."""
    pd = pytest.importorskip("pandas")
    names = [b"a\nb.tmd", b"c,d.tmd", b'e"f.tmd', b"g\xff.tmd", b"=1+1.tmd"]
    for name in names:
        shutil.copy(scan / "a.tmd", os.path.join(os.fsencode(scan), name))
    out = tmp_path / "out"
    assert len(batch.convert(scan, out, jobs=1, progress=False).converted) == len(names) + 1
    again = batch.convert(scan, out, jobs=1, progress=False)
    assert again.ok and len(again.skipped) == len(names) + 1
    table = pd.read_csv(out / batch.MANIFEST, encoding_errors="surrogateescape")
    assert sorted(os.fsencode(os.path.basename(s)) for s in table["source"]) == sorted([*names, b"a.tmd"])


@pytest.mark.parametrize(
    "line",
    ['"' + "x" * 200_000 + '",1,1,tmd,,/x,failed,,', "a,\0,b,,,,,,", "/a,²,1,tmd,,/b,converted,,", "only,three,fields"],
    ids=["field-over-csv-limit", "nul", "superscript-size", "short"],
)
def test_a_bad_line_in_the_manifest_costs_that_line_only(scan, tmp_path, line):
    """A line no run wrote, first in the manifest, neither stops the run nor hides the lines after it."""
    out = tmp_path / "out"
    assert batch.convert(scan, out, jobs=1, progress=False).ok
    path = out / batch.MANIFEST
    header, rest = path.read_text(encoding="utf-8").split("\n", 1)
    path.write_text(f"{header}\n{line}\n{rest}", encoding="utf-8")
    again = batch.convert(scan, out, jobs=1, progress=False)
    assert again.ok and again.skipped == [(str(scan / "a.tmd"), str(out / "a.npz"))]


def test_convert_in_an_ipython_script_does_not_send_workers_to_run_it(scan, tmp_path):
    """``ipython job.ipy``: a new interpreter cannot run a script that is not Python; every worker died."""
    ipython = Path(sys.executable).with_name("ipython")
    if not ipython.exists():
        pytest.skip("no ipython beside this Python")
    shutil.copy(scan / "a.tmd", scan / "b.tmd")
    script = tmp_path / "job.ipy"
    script.write_text(f"%load_ext tmd_nb\nr = %tmd_convert {scan} -o {tmp_path / 'out'} --jobs 2\nprint(r.summary())\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [str(ipython), "--no-banner", "--colors=NoColor", str(script)], capture_output=True, text=True, env=env
    )
    assert "2 converted, 0 skipped (already done), 0 failed" in run.stdout.splitlines(), run.stdout + run.stderr


@pytest.mark.parametrize("output", ["{src}/a.tmd", "{out}/../scans/a.tmd"])
def test_a_manifest_line_naming_a_source_as_output_does_not_hide_it(scan, tmp_path, output):
    """Only files in the output folder can be convert's outputs: a source elsewhere is still converted."""
    out = tmp_path / "out"
    out.mkdir()
    named = output.format(src=scan, out=out)
    write_manifest(out, [str(scan / "x.tmd"), "1", "1", "tmd", "", named, "converted", "", digest(scan / "a.tmd")])
    report = batch.convert(scan, out, jobs=1, progress=False)
    assert report.converted == [(str(scan / "a.tmd"), str(out / "a.npz"))]


@given(data=st.data())
def test_no_manifest_changes_a_file_outside_or_a_file_no_line_claims_by_content(tmp_path_factory, tmd_samples, data):
    """Random hand-made lines (statuses, sizes, paths with '..', outside files, formula-looking text):
    convert never raises, never touches a file outside the output folder, never replaces a user's file
    unless a line claims it with a SHA-256, and leaves no temporary file."""
    base = tmp_path_factory.mktemp("fuzz")
    src, out = base / "scans", base / "out"
    src.mkdir()
    out.mkdir()
    shutil.copy(tmd_samples / "v2_Dime.tmd", src / "a.tmd")
    np.savez(out / "a.npz", mine=np.arange(3))
    outside = base / "victim.npz"
    np.savez(outside, v=np.arange(3))
    before = {p: digest(p) for p in (out / "a.npz", outside)}
    st_a = (src / "a.tmd").stat()
    text = st.sampled_from
    line = st.tuples(
        text([str(src / "a.tmd"), "x", str(outside)]),
        text([str(st_a.st_size), "1", "", "-1", "9" * 30]),
        text([str(st_a.st_mtime_ns), "0", ""]),
        text(["tmd", "npz", "", "=HYPERLINK(1)"]),
        text(["", "Phase", "0"]),
        text([str(out / "a.npz"), str(outside), str(out / ".." / "victim.npz"), ""]),
        text(["started", "converted", "skipped", "failed", "bogus"]),
        text(["", "+cmd"]),
        text(["", "0" * 64, before[out / "a.npz"], before[outside]]),
    )
    rows = [list(r) for r in data.draw(st.lists(line, max_size=5))]
    write_manifest(out, *rows)
    report = batch.convert(src, out, jobs=1, progress=False)
    assert digest(outside) == before[outside]
    if not any(r[5] == str(out / "a.npz") and r[8] for r in rows):
        assert digest(out / "a.npz") == before[out / "a.npz"]
        assert [reason for _, reason in report.failed] in ([UNSURE], [NOT_OURS])
    assert not [p for p in os.listdir(out) if p.startswith(".")]
