"""Attacks on the streamed Gwyddion save of Dask maps and on convert's two files in flight per worker.

A save writes exactly what the save of the computed map in memory writes, or raises a clear error
naming what is wrong and leaves the old file as it was; convert converts every good file once and
names every bad one.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import gwyfile
import numpy as np
import pytest
from conftest import ROOT, SHARED, require
from hypothesis import given, settings
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import batch, export_to_gwy
from tmd_nb.storage import units

da = pytest.importorskip("dask.array")

FAST = settings(max_examples=max(1, settings.default.max_examples // 4), deadline=None)
INSTRUMENTS = SHARED / "data" / "instruments"
TMD = SHARED / "data" / "tmd"


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def in_memory_bytes(data: dict) -> bytes:
    """The file :func:`export_to_gwy` writes of ``data`` computed, in memory."""
    computed = {k: (v.compute() if hasattr(v, "compute") else v) for k, v in data.items()}
    with tempfile.TemporaryDirectory() as folder:
        export_to_gwy(computed, Path(folder) / "memory.gwy")
        return (Path(folder) / "memory.gwy").read_bytes()


# ------------------------------------------------------------------------------------------
# the same bytes as the map in memory
# ------------------------------------------------------------------------------------------

DTYPES = ["<f2", ">f2", "<f4", ">f4", ">f8", "<i2", ">i8", "u1", "?", "<c8", ">c16"]


@st.composite
def maps(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rows = draw(st.integers(1, 9))
    cols = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = (rng.normal(size=(rows, cols)) * 300).astype(dtype) if dtype.kind != "b" else rng.random((rows, cols)) > 0.5
    if dtype.kind in "fc":
        where = draw(st.sampled_from(["none", "last", "all", "inf", "first"]))
        if where == "last":
            a[-1, -1] = np.nan
        elif where == "all":
            a[...] = np.nan
        elif where == "inf":
            a[-1, 0] = -np.inf
        elif where == "first":
            a[0, 0] = np.nan
    chunks = (draw(st.integers(1, rows)), draw(st.integers(1, cols)))
    meta = draw(st.sampled_from([{"units": "m"}, {"units": "mm"}, {"units": "nm"}, {"height_unit": "V"}]))
    return a, chunks, meta


@FAST
@given(maps())
def test_any_dtype_shape_and_chunking_streams_the_bytes_of_the_map_in_memory(tmp_path_factory, drawn):
    a, chunks, meta = drawn
    tmp = tmp_path_factory.mktemp("map")
    memory = in_memory_bytes({"height_map": a, **meta})
    export_to_gwy({"height_map": da.from_array(a, chunks=chunks), **meta}, tmp / "dask.gwy")
    assert (tmp / "dask.gwy").read_bytes() == memory


@pytest.mark.parametrize("layout", ["fortran", "transposed"])
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<c16"])
def test_a_fortran_ordered_map_with_gaps_is_the_file_of_its_c_ordered_copy_and_of_its_dask_stream(
    tmp_path, layout, dtype
):
    base = (np.random.default_rng(10).normal(size=(60, 110)) * 50).astype(dtype)
    base[5, 7] = base[59, 0] = np.nan
    view = np.asfortranarray(base) if layout == "fortran" else np.ascontiguousarray(base.T).T
    # Row sums of a Fortran-ordered map come in another order (the fill's last bits), and the
    # missing points' member was written in Fortran order.
    export_to_gwy({"height_map": view, "units": "mm"}, tmp_path / "view.gwy")
    copy = in_memory_bytes({"height_map": np.ascontiguousarray(view), "units": "mm"})
    assert (tmp_path / "view.gwy").read_bytes() == copy
    export_to_gwy({"height_map": da.from_array(view, chunks=(7, 50)), "units": "mm"}, tmp_path / "dask.gwy")
    assert (tmp_path / "dask.gwy").read_bytes() == copy


@pytest.mark.parametrize("mask", ["dask", "wrong shape", "dask wrong shape", "float"])
def test_a_users_mask_given_as_dask_or_of_another_shape_is_saved_as_in_memory(tmp_path, mask):
    a = np.random.default_rng(3).normal(size=(12, 7))
    a[11, 6] = np.nan
    m = np.random.default_rng(4).random((12, 7)) > 0.7
    value = {
        "dask": da.from_array(m, chunks=5),
        "wrong shape": m[:, :6],
        "dask wrong shape": da.from_array(m.T, chunks=5),
        "float": m.astype(float),
    }[mask]
    data = {"height_map": da.from_array(a, chunks=(5, 3)), "mask": value}
    memory = in_memory_bytes(data)
    export_to_gwy(data, tmp_path / "dask.gwy")
    assert (tmp_path / "dask.gwy").read_bytes() == memory


def test_a_sum_beyond_float64_with_the_only_gap_in_the_last_block_is_the_file_in_memory(tmp_path):
    a = np.full((6, 5), 1.7e308)
    a[5, 4] = np.nan
    memory = in_memory_bytes({"height_map": a, "units": "m"})
    export_to_gwy({"height_map": da.from_array(a, chunks=(1, 1)), "units": "m"}, tmp_path / "dask.gwy")
    assert (tmp_path / "dask.gwy").read_bytes() == memory
    assert gwyfile.load(str(tmp_path / "dask.gwy"))["/0/data"].data[5, 4] == 1.7e308  # filled within the range


# ------------------------------------------------------------------------------------------
# masked Dask maps: a masked point is no height
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["gwy", "npz", "npy", "tmd", "x3p"])
def test_a_masked_dask_map_is_refused_as_a_masked_numpy_map_is(tmp_path, format):
    a = np.arange(12.0).reshape(3, 4)
    masked = da.ma.masked_array(da.from_array(a, chunks=2), mask=a > 5)
    with pytest.raises(TypeError, match=r"^data\['height_map'\] is a masked array; save array.filled\(np.nan\)"):
        tmd_nb.save({"height_map": masked}, tmp_path / f"scan.{format}")
    assert not os.listdir(tmp_path)


def test_blocks_computing_to_masked_arrays_the_chunks_did_not_declare_are_refused(tmp_path):
    lazy = da.map_blocks(
        lambda b: np.ma.masked_greater(b, 5.0),
        da.from_array(np.arange(12.0).reshape(3, 4), chunks=2),
        meta=np.array(()),
    )
    with pytest.raises(TypeError, match=r"^block row 0 of the Dask array computed to a masked array"):
        export_to_gwy({"height_map": lazy}, tmp_path / "scan.gwy")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------
# blocks that change between the two passes
# ------------------------------------------------------------------------------------------


def old_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "scan.gwy"
    export_to_gwy(np.ones((3, 3)), path)
    return path, path.read_bytes()


def test_a_random_block_each_compute_is_refused_and_the_old_file_stays(tmp_path):
    path, before = old_file(tmp_path)
    rng = np.random.default_rng(5)

    def block(b):
        out = rng.normal(size=b.shape)
        out[-1, -1] = np.nan  # the last point of every block: every block row is computed twice
        return out

    lazy = da.map_blocks(block, da.empty((30, 8), chunks=(10, 4)), dtype=np.float64)
    with pytest.raises(ValueError, match=r"^block row 0 of the Dask array computed to other values the second time"):
        export_to_gwy({"height_map": lazy}, path)
    assert path.read_bytes() == before
    assert files(tmp_path) == ["scan.gwy"]


def test_a_block_changing_only_its_nan_payload_is_refused(tmp_path):
    path, before = old_file(tmp_path)
    calls = []

    def block(b, block_info=None):
        calls.append(1)
        out = np.ones(b.shape)
        out.view(np.uint64)[-1, -1] = 0x7FF8_0000_0000_0000 | len(calls)  # another NaN each time
        return out

    lazy = da.map_blocks(block, da.empty((4, 4), chunks=(2, 4)), dtype=np.float64)
    with pytest.raises(ValueError, match=r"^block row 0 of the Dask array computed to other values"):
        export_to_gwy({"height_map": lazy}, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("second", "error", "message"),
    [
        ("raise", RuntimeError, r"^second pass failed$"),
        ("dtype", ValueError, r"^block row 2 of the Dask array computed to shape \(5, 6\) and dtype float32, not"),
        ("shape", ValueError, r"^block row 2 of the Dask array computed to shape \(4, 6\) and dtype float64, not"),
    ],
)
def test_a_block_failing_only_the_second_time_leaves_the_old_file(tmp_path, second, error, message):
    path, before = old_file(tmp_path)
    seen: dict[int, int] = {}

    def block(b, block_info=None):
        row = block_info[None]["chunk-location"][0]
        seen[row] = seen.get(row, 0) + 1
        out = np.full(b.shape, float(row))
        if row == 3:
            out[4, 5] = np.nan  # the only gap, in the last block row: rows 3 on are computed twice
        if row == 2:
            out[0, 0] = np.nan
        if seen[row] == 2 and row == 2:
            if second == "raise":
                raise RuntimeError("second pass failed")
            return out.astype(np.float32) if second == "dtype" else out[:4]
        return out

    lazy = da.map_blocks(block, da.empty((20, 6), chunks=(5, 6)), dtype=np.float64)
    with pytest.raises(error, match=message):
        export_to_gwy({"height_map": lazy}, path)
    assert seen[2] == 2  # it failed in the second pass
    assert path.read_bytes() == before
    assert files(tmp_path) == ["scan.gwy"]


# ------------------------------------------------------------------------------------------
# the file at the path
# ------------------------------------------------------------------------------------------


def test_a_save_killed_mid_stream_leaves_the_old_file_and_the_next_save_removes_its_temporary(tmp_path):
    path, before = old_file(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, threading
        import numpy as np, dask.array as da
        import tmd_nb
        count = []
        def block(b, block_info=None):
            count.append(1)
            out = np.full(b.shape, 2.0)
            out[0, 0] = np.nan if block_info[None]["chunk-location"][0] == 0 else 2.0
            if len(count) == 6:  # the second pass over the block rows: the file is half written
                print("streaming", flush=True)
                threading.Event().wait()  # until killed
            return out
        lazy = da.map_blocks(block, da.empty((40, 300), chunks=(10, 300)), dtype=np.float64)
        tmd_nb.save(lazy, {str(path)!r})
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_SCHEDULER="synchronous")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "streaming\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert path.read_bytes() == before
    left = [name for name in files(tmp_path) if name != "scan.gwy"]
    assert len(left) == 1 and left[0].startswith(".scan.gwy.") and os.path.getsize(tmp_path / left[0]) > 0
    a = np.random.default_rng(6).normal(size=(9, 4))
    a[8, 3] = np.nan
    export_to_gwy(da.from_array(a, chunks=3), path)
    assert files(tmp_path) == ["scan.gwy"]
    assert path.read_bytes() == in_memory_bytes({"height_map": a})


def test_two_threads_streaming_onto_one_path_leave_one_whole_file(tmp_path):
    path = tmp_path / "scan.gwy"
    both = threading.Barrier(2, timeout=60)
    maps = []
    for seed in (7, 8):
        a = np.random.default_rng(seed).normal(size=(30, 20))
        a[29, 19] = np.nan
        maps.append(a)

    def block(b, a, block_info=None):
        if block_info[None]["chunk-location"][0] == 1:
            both.wait()  # both saves are mid-stream at once
        (rows, _), (cols, _) = block_info[None]["array-location"]
        return a[rows : rows + b.shape[0], cols : cols + b.shape[1]]

    errors = []

    def save(a):
        lazy = da.map_blocks(functools.partial(block, a=a), da.empty(a.shape, chunks=(10, 20)), dtype=np.float64)
        try:
            export_to_gwy(lazy, path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(a,)) for a in maps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = [in_memory_bytes({"height_map": a}) for a in maps]
    assert path.read_bytes() in expected
    assert files(tmp_path) == ["scan.gwy"]


def test_a_streamed_save_follows_a_symlink_and_refuses_read_only_files_and_folders(tmp_path):
    target = tmp_path / "real.gwy"
    export_to_gwy(np.ones((2, 2)), target)
    link = tmp_path / "link.gwy"
    link.symlink_to(target)
    a = np.arange(6.0).reshape(2, 3)
    a[1, 2] = np.nan
    export_to_gwy(da.from_array(a, chunks=1), link)
    assert link.is_symlink() and target.read_bytes() == in_memory_bytes({"height_map": a})

    locked = tmp_path / "locked.gwy"
    export_to_gwy(np.ones((2, 2)), locked)
    locked.chmod(0o444)
    before = locked.read_bytes()
    with pytest.raises(PermissionError, match="write-protected"):
        export_to_gwy(da.from_array(a, chunks=1), locked)
    assert locked.read_bytes() == before
    (tmp_path / "folder.gwy").mkdir()
    with pytest.raises(IsADirectoryError):
        export_to_gwy(da.from_array(a, chunks=1), tmp_path / "folder.gwy")
    assert sorted(files(tmp_path)) == ["folder.gwy", "link.gwy", "locked.gwy", "real.gwy"]


def test_gwyddion_reads_a_streamed_file_with_gaps_as_gwyfile_does(tmp_path):
    require(shutil.which("gwyddion") is not None, "Gwyddion (the gwyddion program) is not installed")
    a = np.random.default_rng(9).normal(size=(40, 30)).astype(np.float32)
    a[39, 29] = np.nan
    a[0, 0] = np.inf
    source = tmp_path / "streamed.gwy"
    export_to_gwy({"height_map": da.from_array(a, chunks=(7, 11)), "units": "um"}, source)
    peer = tmp_path / "peer.gwy"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    subprocess.run(
        ["gwyddion", f"--convert-to-gwy={peer}", str(source)], check=True, capture_output=True, timeout=120, env=env
    )
    ours, theirs = gwyfile.load(str(source)), gwyfile.load(str(peer))
    np.testing.assert_array_equal(theirs["/0/data"].data, ours["/0/data"].data)
    np.testing.assert_array_equal(theirs["/0/mask"].data, ours["/0/mask"].data)
    expected = a.astype(np.float64) * 1e-6
    finite = np.isfinite(a)
    np.testing.assert_array_equal(theirs["/0/data"].data[finite], expected[finite])
    assert np.argwhere(theirs["/0/mask"].data > 0.5).tolist() == [[0, 0], [39, 29]]
    assert tmd_nb.load(source)["height_map"].tobytes() == a.tobytes()


# ------------------------------------------------------------------------------------------
# convert: two files in flight per worker
# ------------------------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path, tmd_samples) -> Path:
    require(INSTRUMENTS.is_dir(), f"instrument samples not found at {INSTRUMENTS}")
    src = tmp_path / "mixed"
    src.mkdir()
    for name in ("sur-2.sur", "plu-1.plu", "di-3.di", "al3d-1.al3d"):
        shutil.copy(INSTRUMENTS / name, src / name)
    for scan in sorted(tmd_samples.glob("v2_*.tmd"))[:3]:
        shutil.copy(scan, src / scan.name)
    (src / "corrupt.tmd").write_bytes(b"\x00garbage" * 10)
    shutil.copy(sorted(tmd_samples.glob("v2_*.tmd"))[0], src / "killer.tmd")
    return src


def convert_cli(src: Path, out: Path, format: str = "npz", **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMD_NB_TEST_KILL_WORKER="killer.tmd")
    command = ["convert", str(src), "-o", str(out), "--jobs", "2", "--no-progress", "--format", format]
    return subprocess.Popen(
        [sys.executable, "-m", "tmd_nb", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


@pytest.mark.parametrize("format", ["npz", "gwy"])
def test_a_mixed_folder_with_a_corrupt_file_and_a_worker_killer_converts_every_good_file_once(mixed, tmp_path, format):
    out = tmp_path / "out"
    child = convert_cli(mixed, out, format)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 1, stdout + stderr
    good = sorted(p.name for p in mixed.iterdir() if p.name not in ("corrupt.tmd", "killer.tmd"))
    assert stdout.splitlines()[0] == f"{len(good)} converted, 0 skipped (already done), 2 failed"
    failed = sorted(line.strip() for line in stdout.splitlines() if line.startswith("  failed: "))
    assert failed[0].startswith(f"failed: {mixed / 'corrupt.tmd'}: FormatError: ")
    assert failed[1] == f"failed: {mixed / 'killer.tmd'}: {batch._DIED}"
    with (out / batch.MANIFEST).open(newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    final = {}
    for line in lines:
        final[os.path.basename(line["source"])] = line
    assert sorted(final) == sorted(p.name for p in mixed.iterdir())
    for name in good:
        assert [line["status"] for line in lines if line["source"] == str(mixed / name)][-1] == "converted"
        output = Path(final[name]["output"])
        assert batch._sha256(str(output)) == final[name]["output_sha256"]
        source = tmd_nb.load(mixed / name)
        np.testing.assert_array_equal(tmd_nb.load(output)["height_map"], source["height_map"], strict=True)
        if format == "gwy":  # what an independent reader sees: the heights in metres, gaps masked
            field = gwyfile.load(str(output))
            metres = units.metres_per(units.physical(source).height_unit or "mm")
            finite = np.isfinite(source["height_map"])
            np.testing.assert_array_equal(
                field["/0/data"].data[finite], source["height_map"][finite].astype(np.float64) * metres
            )
            assert finite.all() or (field["/0/mask"].data[~finite] == 1.0).all()
    assert sorted(files(out)) == sorted([batch.MANIFEST] + [f"{Path(n).stem}.{format}" for n in good])


def test_ctrl_c_during_a_convert_leaves_no_half_written_outputs_and_the_next_run_finishes(mixed, tmp_path):
    for i in range(30):
        shutil.copy(sorted(mixed.glob("v2_*.tmd"))[i % 3], mixed / f"copy{i:02d}.tmd")
    out = tmp_path / "out"
    child = convert_cli(mixed, out, start_new_session=True)  # its own process group, as a terminal's job
    try:
        manifest = out / batch.MANIFEST
        # Wait for the first finished file, as the manifest says: the run is then well under way.
        while child.poll() is None and (not manifest.exists() or b",converted," not in manifest.read_bytes()):
            threading.Event().wait(0.01)
        os.killpg(child.pid, signal.SIGINT)  # Ctrl-C: the whole group, workers and fork server too
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:  # pragma: no cover
            child.kill()
    assert child.returncode == 130, stderr
    assert "interrupted: run the same command again to convert what is missing" in stderr
    done = [p.name for p in out.iterdir() if p.name != batch.MANIFEST]
    for name in done:
        assert not name.startswith("."), f"a temporary was left: {name}"
        tmd_nb.load(out / name)  # whole
    good = sorted(p.name for p in mixed.iterdir() if p.name not in ("corrupt.tmd", "killer.tmd"))
    assert len(done) < len(good)
    again = convert_cli(mixed, out)
    stdout, stderr = again.communicate(timeout=300)
    assert stdout.splitlines()[0] == (
        f"{len(good) - len(done)} converted, {len(done)} skipped (already done), 2 failed"
    ), stdout + stderr
    assert sorted(files(out)) == sorted([batch.MANIFEST] + [Path(n).stem + ".npz" for n in good])


def test_a_dask_map_declaring_more_than_a_gwyddion_field_holds_is_refused_before_any_block_is_computed(tmp_path):
    path, before = old_file(tmp_path)
    computed = []

    def block(b):
        computed.append(1)  # pragma: no cover - never computed
        return np.zeros(b.shape)

    lazy = da.map_blocks(block, da.empty((1 << 17, 1 << 17), chunks=(1 << 12, 1 << 17)), meta=np.zeros((0, 0)))
    with pytest.raises(ValueError, match=r"^a 131072 x 131072 map is 137,438,953,472 bytes of float64 heights; a Gwyd"):
        export_to_gwy(lazy, path)
    assert not computed and path.read_bytes() == before and files(tmp_path) == ["scan.gwy"]
