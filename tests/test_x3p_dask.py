"""X3P saves of Dask maps: streamed block row by block row into ``bindata/data.bin``, the same file
as the map in memory gives (value for value, member for member), memory bounded, nothing lost on error."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import x3pio
from helpers import assert_identical
from hypothesis import given, settings
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import export_to_x3p, load_x3p
from tmd_nb.storage import _io, archive, deflate, embedded

da = pytest.importorskip("dask.array")

# Each example writes two X3P files (fsynced): a quarter of the profile's count, as in test_x3p.
FAST = settings(max_examples=max(1, settings.default.max_examples // 4))
DATE = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)  # Record2's date is now unless given


@pytest.fixture
def small_chunks(monkeypatch):
    """Many deflate chunks, a libdeflate tail cut within a number, the same timestamps in both files."""
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(deflate, "SPLIT_MIN", 1 << 12)
    monkeypatch.setattr(deflate, "FINAL_MAX", 12_345)  # odd: the tail starts within a number
    monkeypatch.setattr(_io, "CHUNK", 1 << 13)
    monkeypatch.setattr(archive, "_dos_time", lambda: (0x6000, 0x5821))


def surface(shape=(301, 97), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape).cumsum(axis=1) * 7).astype(dtype)


def same_container(memory, lazy):
    """Both files hold the same members, each the same bytes, deflated alike; the Dask save's
    ``data.bin`` comes first (``main.xml`` states its MD5, known once it is written)."""
    with zipfile.ZipFile(memory) as zm, zipfile.ZipFile(lazy) as zd:
        assert sorted(zm.namelist()) == sorted(zd.namelist())
        assert zd.namelist()[0] == "bindata/data.bin" and zm.namelist()[0] == "main.xml"
        for name in zm.namelist():
            assert zd.read(name) == zm.read(name), name
            a, b = zm.getinfo(name), zd.getinfo(name)
            assert (a.CRC, a.compress_size, a.compress_type) == (b.CRC, b.compress_size, b.compress_type), name


UNITS = [
    {},
    {"units": "um"},
    {"height_unit": "nm", "lateral_unit": "mm", "x_length": 2.5, "y_offset": -0.25},
    {"height_unit": "km", "lateral_unit": "m", "y_length": 1e-3},
]


@pytest.mark.parametrize("level", [None, "balanced", 0, 6])
@pytest.mark.parametrize("unit", range(len(UNITS)))
@pytest.mark.parametrize("dtype", ["<f4", "<f8", ">f8", ">f4"])
def test_dask_save_is_the_save_in_memory(tmp_path, small_chunks, dtype, unit, level):
    a = surface(dtype=dtype)
    a[3, 4] = a[100, :] = a[:, 96] = np.nan
    a[7, 7] = np.float64(-np.inf).astype(dtype)
    a.reshape(-1).view(f"{dtype[0]}u{a.itemsize}")[5] |= 1  # a NaN payload other than numpy's
    meta = {"date": DATE, "comment": "stitched", **UNITS[unit]}
    export_to_x3p({"height_map": a, "mask": a > 0, **meta}, tmp_path / "memory.x3p", level=level)
    lazy = {"height_map": da.from_array(a, chunks=(37, 40)), "mask": da.from_array(a > 0, chunks=50), **meta}
    export_to_x3p(lazy, tmp_path / "dask.x3p", level=level)
    same_container(tmp_path / "memory.x3p", tmp_path / "dask.x3p")
    assert_identical({"height_map": a, "mask": a > 0, **meta}, load_x3p(tmp_path / "dask.x3p"))


@FAST
@given(
    rows=st.integers(1, 60),
    cols=st.integers(1, 60),
    block=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    dtype=st.sampled_from(["<f4", "<f8", ">f8", "<f2", "<i2", "<u2", "<i4", "|u1", "|b1", "<u4", "<i8"]),
    gaps=st.floats(0, 1),
    level=st.sampled_from([None, "smallest", 0, 9]),
)
def test_any_chunking_gives_the_file_of_the_map_in_memory(tmp_path, rows, cols, block, dtype, gaps, level):
    rng = np.random.default_rng(rows * 1000 + cols)
    a = (rng.normal(size=(rows, cols)) * 1000).astype(dtype)
    if a.dtype.kind == "f":
        a[rng.random(a.shape) < gaps] = np.nan
    meta = {"date": DATE, "units": "um"}
    export_to_x3p({"height_map": a, **meta}, tmp_path / "memory.x3p", level=level)
    export_to_x3p({"height_map": da.from_array(a, chunks=block), **meta}, tmp_path / "dask.x3p", level=level)
    with zipfile.ZipFile(tmp_path / "memory.x3p") as zm, zipfile.ZipFile(tmp_path / "dask.x3p") as zd:
        assert {n: zm.read(n) for n in zm.namelist()} == {n: zd.read(n) for n in zd.namelist()}
    assert_identical({"height_map": a, **meta}, load_x3p(tmp_path / "dask.x3p"))


@pytest.mark.parametrize(
    "dtype,values,member",
    [
        ("<i8", [2**60 + 1, -(2**62) - 3], "__patch_at__.npy"),  # beyond float64's 2**53
        ("<u8", [2**64 - 1] * 3000, "height_map.npy"),  # too many points for a patch
        ("<c16", [1 + 2j], "__patch_at__.npy"),  # one imaginary part
        ("<c8", [], None),  # no imaginary part: the real parts give the map back
        ("<f2", [], None),  # float16 stored as float32
    ],
)
def test_maps_needing_a_patch_or_an_exact_copy_give_the_same_file(tmp_path, dtype, values, member):
    a = (surface((120, 70), np.float64) * 10).astype(dtype)
    a.reshape(-1)[: len(values)] = values
    export_to_x3p({"height_map": a, "date": DATE}, tmp_path / "memory.x3p")
    export_to_x3p({"height_map": da.from_array(a, chunks=(25, 30)), "date": DATE}, tmp_path / "dask.x3p")
    with zipfile.ZipFile(tmp_path / "memory.x3p") as zm, zipfile.ZipFile(tmp_path / "dask.x3p") as zd:
        assert {n: zm.read(n) for n in zm.namelist()} == {n: zd.read(n) for n in zd.namelist()}
        named = {n.replace("\\", "/").rsplit("/", 1)[-1] for n in zm.namelist()}
    assert named & {"height_map.npy", "__patch_at__.npy"} == ({member} if member else set())
    assert_identical({"height_map": a, "date": DATE}, load_x3p(tmp_path / "dask.x3p"))


def test_x3pio_reads_the_same_metres_and_checks_the_md5(tmp_path):
    a = surface((250, 130), np.float64)
    a[10:20, 5] = np.nan
    data = {"height_map": da.from_array(a, chunks=(16, 64)), "height_unit": "um", "lateral_unit": "um"}
    out = export_to_x3p(data, tmp_path / "dask.x3p")
    file = x3pio.read(out, verify=True)  # the MD5 in main.xml and md5checksum.hex checked
    z = np.asarray(file.layers[0].z, dtype=np.float64)
    assert np.array_equal(z, a * 1e-6, equal_nan=True)
    assert file.header.x.increment == pytest.approx(1e-6, rel=1e-15)
    with zipfile.ZipFile(out) as zf:
        digest = hashlib.md5(zf.read("bindata/data.bin"), usedforsecurity=False).hexdigest()
        assert digest.encode() in zf.read("main.xml")


def test_a_block_failing_mid_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "scan.x3p"
    export_to_x3p(surface(), path)
    before = path.read_bytes()
    calls = []

    def block(b, block_info=None):
        row = block_info[None]["chunk-location"][0]
        calls.append(row)
        if row == 5:
            raise RuntimeError("instrument dropped out")
        return np.full(b.shape, float(row))

    lazy = da.map_blocks(block, da.empty((400, 90), chunks=(40, 90)), dtype=np.float64)
    with pytest.raises(RuntimeError, match="^instrument dropped out$"):
        export_to_x3p({"height_map": lazy}, path)
    assert 0 in calls and 5 in calls  # it failed as the blocks streamed
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.x3p"]  # no temporary file left


def test_a_height_beyond_range_in_metres_is_named_at_its_place_in_the_map(tmp_path):
    a = surface((90, 80), np.float64)
    a[57, 61] = 1e306
    with pytest.raises(ValueError) as memory:
        export_to_x3p({"height_map": a, "height_unit": "km"}, tmp_path / "m.x3p")
    with pytest.raises(ValueError) as lazy:
        export_to_x3p({"height_map": da.from_array(a, chunks=(20, 30)), "height_unit": "km"}, tmp_path / "d.x3p")
    assert str(lazy.value) == str(memory.value)
    assert "at index (57, 61)" in str(lazy.value)
    assert not os.listdir(tmp_path)


def test_save_and_convert_take_the_dask_path(tmp_path):
    a = surface((64, 48))
    lazy = {"height_map": da.from_array(a, chunks=16), "units": "um", "date": DATE}
    tmd_nb.save(lazy, tmp_path / "a.x3p")
    export_to_x3p({"height_map": a, "units": "um", "date": DATE}, tmp_path / "b.x3p")
    with zipfile.ZipFile(tmp_path / "a.x3p") as za, zipfile.ZipFile(tmp_path / "b.x3p") as zb:
        assert za.namelist()[0] == "bindata/data.bin"
        assert {n: za.read(n) for n in za.namelist()} == {n: zb.read(n) for n in zb.namelist()}


@FAST
@given(data=st.data(), dtype=st.sampled_from(["<f2", "<f4", "<f8", "<i2", "<i4"]))
def test_the_gathered_fingerprint_is_the_whole_maps(data, dtype):
    values = np.frombuffer(data.draw(st.binary(min_size=8, max_size=400)), dtype=np.uint8)
    values = values[: len(values) // 8 * 8].view(dtype)
    shape = (1, values.size)
    fields = {"z_increment": 1e-6, "x_offset": 0.0}
    cuts = sorted(data.draw(st.lists(st.integers(0, values.nbytes), max_size=6)))
    gathered = embedded.Gathered(values.dtype, shape, values.dtype)
    raw = memoryview(values.view(np.uint8))
    for start, end in zip([0, *cuts], [*cuts, values.nbytes], strict=True):
        gathered.add_stored(raw[start:end])
    assert gathered.fingerprint(fields) == embedded.fingerprint(values.reshape(shape), fields, stored=True)


BOUNDED = textwrap.dedent(
    """
    import os, sys
    import dask, dask.array as da, numpy as np
    import x3pio  # imported before the reset, as any save of the process would have it
    import tmd_nb
    from memory_probe import reset_peak, vm  # the child runs in the tests folder

    dask.config.set(scheduler="synchronous")  # one block row computed at a time, on this thread
    rows, cols, band = 6400, 8192, 256  # 400 MiB of float64 in 16 MiB block rows

    def block(b, block_info=None):
        i, j = block_info[None]["chunk-location"]
        out = np.random.default_rng([i, j]).standard_normal(size=b.shape)
        out[::97, ::89] = np.nan
        return out

    x = da.map_blocks(block, da.empty((rows, cols), dtype=np.float64, chunks=(band, 4096)), dtype=np.float64)
    before = reset_peak()  # bytes
    getattr(tmd_nb, sys.argv[2])({"height_map": x, "height_unit": "um"}, sys.argv[1])
    peak = vm("VmHWM")
    print(before // 2**20, peak // 2**20)
    """
)


def peak_growth(path, save):
    run = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(path), save],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert run.returncode == 0, run.stderr
    before_mib, peak_mib = map(int, run.stdout.split())
    return peak_mib - before_mib


@pytest.mark.slow
def test_dask_x3p_save_keeps_peak_memory_far_below_the_map(tmp_path):
    out = tmp_path / "big.x3p"
    grew = peak_growth(out, "export_to_x3p")
    # The NPZ save of the same map grows by about 110 MiB (two block rows, the chunks in flight);
    # the X3P save adds no more than that, far below the 400 MiB map (computing it whole: 860 MiB).
    assert grew < 160, f"peak RSS grew by {grew} MiB saving a 400 MiB map"
    info = x3pio.info(out, verify=True)
    assert info.shape == (6400, 8192)
    windows = load_x3p(out)["height_map"]  # the record's fingerprint checked against data.bin
    expected = np.random.default_rng([7, 1]).standard_normal(size=(256, 4096))
    expected[::97, ::89] = np.nan
    assert np.array_equal(windows[7 * 256 : 8 * 256, 4096:], expected, equal_nan=True)


@pytest.mark.slow
def test_a_save_whose_blocks_compute_on_a_local_cluster_is_the_same_file(tmp_path):
    # The blocks run in worker processes: what the record needs is gathered from the bytes written
    # here, and a map needing a patch is found there (the exception comes back) and computed whole.
    distributed = pytest.importorskip("distributed")
    maps = {"float32": surface((300, 90)), "int64": surface((300, 90), np.float64).astype(np.int64)}
    maps["int64"][150, 45] = 2**60 + 1  # a patch
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        for name, a in maps.items():
            lazy = {"height_map": da.from_array(a, chunks=(60, 45)), "date": DATE, "units": "um"}
            export_to_x3p(lazy, tmp_path / f"{name}-dask.x3p")
            export_to_x3p({**lazy, "height_map": a}, tmp_path / f"{name}-memory.x3p")
            memory, streamed = (
                zipfile.ZipFile(tmp_path / f"{name}-memory.x3p"),
                zipfile.ZipFile(tmp_path / f"{name}-dask.x3p"),
            )
            with memory as zm, streamed as zd:
                assert {n: zm.read(n) for n in zm.namelist()} == {n: zd.read(n) for n in zd.namelist()}
            assert_identical({**lazy, "height_map": a}, load_x3p(tmp_path / f"{name}-dask.x3p"))
