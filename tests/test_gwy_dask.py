"""Gwyddion saves of Dask maps: streamed block row by block row into ``/0/data``, the same file as
the map in memory gives (byte for byte), memory bounded, nothing lost on error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gwyfile
import numpy as np
import pytest
from helpers import assert_identical
from hypothesis import given, settings
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import export_to_gwy, load_gwy
from tmd_nb.formats import gwy

da = pytest.importorskip("dask.array")

# Each example writes two files (fsynced): a quarter of the profile's count, as in test_x3p_dask.
FAST = settings(max_examples=max(1, settings.default.max_examples // 4))


def surface(shape=(301, 97), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape).cumsum(axis=1) * 7).astype(dtype)


@pytest.fixture
def whole(monkeypatch):
    """The maps computed whole (the in-memory way, ``_build``), counted: a streamed save makes none."""
    built = []
    build = gwy._build

    def counted(data):
        built.append(1)
        return build(data)

    monkeypatch.setattr(gwy, "_build", counted)
    return built


def both(tmp_path, a, meta, chunks):
    """The file of the map in memory and of the same map as a Dask array, as bytes."""
    export_to_gwy({"height_map": a, **meta}, tmp_path / "memory.gwy")
    export_to_gwy({"height_map": da.from_array(a, chunks=chunks), **meta}, tmp_path / "dask.gwy")
    return (tmp_path / "memory.gwy").read_bytes(), (tmp_path / "dask.gwy").read_bytes()


@pytest.mark.parametrize("chunks", [(37, 40), (301, 97), (1, 20), (120, 97)])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("unit", ["m", "mm", "nm"])
@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_dask_save_is_the_save_in_memory_byte_for_byte(tmp_path, whole, dtype, unit, missing, chunks):
    a = surface(dtype=dtype)
    if missing:
        a[3, 4] = a[100, :] = a[:, 96] = np.nan
        a[7, 7] = np.float64(-np.inf).astype(dtype)
        a.reshape(-1).view(f"u{a.itemsize}")[5] |= 1  # a NaN payload other than numpy's
    meta = {"units": unit, "title": "stitched", "operator": "me"}
    memory, lazy = both(tmp_path, a, meta, chunks)
    assert len(whole) == 1  # the map in memory only: the Dask one streamed
    assert lazy == memory
    assert_identical({"height_map": a, **meta}, load_gwy(tmp_path / "dask.gwy"))


@pytest.mark.parametrize("computed", [False, True])
@pytest.mark.parametrize("missing", [False, True])
def test_a_users_mask_is_the_channels_mask_as_in_memory(tmp_path, whole, missing, computed):
    a = surface((150, 64), np.float64)
    if missing:
        a[10:14, 30] = np.nan
    mask = np.nan_to_num(a) > 3
    given = da.from_array(mask, chunks=50) if computed else mask
    export_to_gwy({"height_map": a, "mask": mask, "units": "um"}, tmp_path / "memory.gwy")
    lazy = {"height_map": da.from_array(a, chunks=(33, 20)), "mask": given, "units": "um"}
    export_to_gwy(lazy, tmp_path / "dask.gwy")
    assert len(whole) == 1
    assert (tmp_path / "dask.gwy").read_bytes() == (tmp_path / "memory.gwy").read_bytes()
    shown = gwyfile.load(str(tmp_path / "dask.gwy"))["/0/mask"].data
    assert np.array_equal(shown, (mask | np.isnan(a)).astype(np.float64))
    assert_identical({"height_map": a, "mask": mask, "units": "um"}, load_gwy(tmp_path / "dask.gwy"))


@FAST
@given(
    rows=st.integers(1, 50),
    cols=st.integers(1, 50),
    block=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    dtype=st.sampled_from(["<f4", "<f8", ">f8", "<f2", "<i2", "<u2", "<i4", "|u1", "|b1", "<c8"]),
    unit=st.sampled_from(["m", "mm", "nm", "V"]),
    gaps=st.floats(0, 1),
    group=st.sampled_from([1, 200, gwy._GROUP]),  # rows handled at a time within a block row
    masked=st.booleans(),
)
def test_any_chunking_gives_the_file_of_the_map_in_memory(
    tmp_path, rows, cols, block, dtype, unit, gaps, group, masked
):
    rng = np.random.default_rng(rows * 1000 + cols)
    a = (rng.normal(size=(rows, cols)) * 1000).astype(dtype)
    if a.dtype.kind == "f":
        a[rng.random(a.shape) < gaps] = np.nan
    meta = {"height_unit": unit, **({"mask": rng.random(a.shape) < 0.3} if masked else {})}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gwy, "_GROUP", group)
        memory, lazy = both(tmp_path, a, meta, block)
    assert lazy == memory
    assert_identical({"height_map": a, **meta}, load_gwy(tmp_path / "dask.gwy"))


def test_a_missing_point_within_a_block_row_rewrites_it_from_its_start(tmp_path, whole, monkeypatch):
    # Rows are handled a few at a time: those before the missing point were written, and are again.
    monkeypatch.setattr(gwy, "_GROUP", 8 * 30 * 3)
    a = surface((50, 30), np.float64)
    a[37, 29] = np.nan
    memory, lazy = both(tmp_path, a, {"units": "um"}, (25, 30))
    assert lazy == memory and len(whole) == 1


@pytest.mark.parametrize(
    "dtype,values,streamed",
    [
        ("<i8", [2**60 + 1, -(2**62) - 3], True),  # beyond float64's 2**53: a patch
        ("<c16", [1 + 2j], True),  # one imaginary part: a patch
        ("<u8", [2**64 - 1] * 3000, False),  # too many points for a patch: an exact copy
    ],
)
def test_maps_needing_a_patch_stream_and_an_exact_copy_is_computed_whole(tmp_path, whole, dtype, values, streamed):
    a = (surface((120, 70), np.float64) * 10).astype(dtype)
    a.reshape(-1)[: len(values)] = values
    memory, lazy = both(tmp_path, a, {}, (25, 30))
    assert lazy == memory
    assert len(whole) == (1 if streamed else 2)
    assert_identical({"height_map": a}, load_gwy(tmp_path / "dask.gwy"))


def test_float64_in_millimetres_streams_with_its_patch(tmp_path, whole):
    # x * 1e-3 / 1e-3 differs from x in the last bit for about 2% of values: a patch, gathered per block.
    a = surface((200, 150), np.float64)
    memory, lazy = both(tmp_path, a, {"units": "mm"}, (45, 64))
    assert lazy == memory and len(whole) == 1
    assert b"/tmd_nb/__patch_at__\0" in lazy


def test_gwyfile_reads_the_same_metres(tmp_path):
    a = surface((250, 130), np.float32)
    a[10:20, 5] = np.nan
    data = {"height_map": da.from_array(a, chunks=(16, 64)), "height_unit": "um", "lateral_unit": "um"}
    container = gwyfile.load(export_to_gwy(data, tmp_path / "dask.gwy"))
    shown, finite = container["/0/data"].data, np.isfinite(a)
    assert np.array_equal(shown[finite], a[finite].astype(np.float64) * 1e-6)
    heights = a[finite].astype(np.float64) * 1e-6
    assert heights.min() <= shown[10, 5] <= heights.max() and np.isfinite(shown).all()
    assert np.array_equal(container["/0/mask"].data, (~finite).astype(np.float64))
    assert container["/0/data"]["xreal"] == pytest.approx(130e-6, rel=1e-15)


def test_the_fill_is_the_mean_of_the_finite_heights(tmp_path):
    a = surface((90, 40), np.float64)
    a[::7, ::3] = np.nan
    export_to_gwy({"height_map": da.from_array(a, chunks=(13, 17)), "units": "m"}, tmp_path / "d.gwy")
    shown = gwyfile.load(str(tmp_path / "d.gwy"))["/0/data"].data
    filled = shown[np.isnan(a)]
    assert np.all(filled == filled[0]) and filled[0] == pytest.approx(np.nanmean(a), rel=1e-13)


def test_a_block_failing_mid_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "scan.gwy"
    export_to_gwy(surface(), path)
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
        export_to_gwy({"height_map": lazy}, path)
    assert 0 in calls and 5 in calls  # it failed as the blocks streamed
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.gwy"]  # no temporary file left


def test_a_map_computing_to_other_values_the_second_time_is_refused(tmp_path):
    counts = {}

    def block(b, block_info=None):
        i = block_info[None]["chunk-location"][0]
        counts[i] = counts.get(i, 0) + 1
        out = np.full(b.shape, float(counts[i]))
        out[0, 0] = np.nan  # a missing point: the block rows are computed twice
        return out

    lazy = da.map_blocks(block, da.empty((60, 8), chunks=(20, 8)), dtype=np.float64)
    with pytest.raises(ValueError, match=r"^block row 0 of the Dask array computed to other values the second time"):
        export_to_gwy({"height_map": lazy}, tmp_path / "unstable.gwy")
    assert not os.listdir(tmp_path)


def test_a_height_beyond_range_in_metres_is_named_at_its_place_in_the_map(tmp_path):
    a = surface((90, 80), np.float64)
    a[57, 61] = 1e306
    with pytest.raises(ValueError) as memory:
        export_to_gwy({"height_map": a, "height_unit": "km"}, tmp_path / "m.gwy")
    with pytest.raises(ValueError) as lazy:
        export_to_gwy({"height_map": da.from_array(a, chunks=(20, 30)), "height_unit": "km"}, tmp_path / "d.gwy")
    assert str(lazy.value) == str(memory.value)
    assert "at index (57, 61)" in str(lazy.value)
    assert not os.listdir(tmp_path)


def test_save_takes_the_streaming_path(tmp_path, whole):
    a = surface((64, 48))
    lazy = {"height_map": da.from_array(a, chunks=16), "units": "um"}
    tmd_nb.save(lazy, tmp_path / "a.gwy")
    assert not whole
    export_to_gwy({**lazy, "height_map": a}, tmp_path / "b.gwy")
    assert (tmp_path / "a.gwy").read_bytes() == (tmp_path / "b.gwy").read_bytes()


BOUNDED = textwrap.dedent(
    """
    import os, sys
    import dask, dask.array as da, numpy as np
    import gwyfile.objects  # imported before the reset, as any save of the process would have it
    import tmd_nb
    from memory_probe import reset_peak, vm  # the child runs in the tests folder

    dask.config.set(scheduler="synchronous")  # one block row computed at a time, on this thread
    rows, cols, band = 6400, 8192, 256  # 400 MiB of float64 in 16 MiB block rows
    dtype, missing = np.dtype(sys.argv[2]), sys.argv[3] == "missing"

    def block(b, block_info=None):
        i, j = block_info[None]["chunk-location"]
        out = np.random.default_rng([i, j]).standard_normal(size=b.shape).astype(dtype)
        if missing:
            out[::97, ::89] = np.nan
        return out

    x = da.map_blocks(block, da.empty((rows, cols), dtype=dtype, chunks=(band, 4096)), dtype=dtype)
    before = reset_peak()  # bytes
    getattr(tmd_nb, sys.argv[5])({"height_map": x, "units": sys.argv[4]}, sys.argv[1])
    peak = vm("VmHWM")
    print(before // 2**20, peak // 2**20)
    """
)


def peak_growth(path, dtype, missing, unit, save="export_to_gwy"):
    run = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(path), dtype, missing, unit, save],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    before_mib, peak_mib = map(int, run.stdout.split())
    return peak_mib - before_mib


@pytest.mark.slow
@pytest.mark.parametrize(
    "dtype,missing,unit",
    [("<f8", "missing", "m"), ("<f4", "none", "um"), ("<f8", "none", "mm")],
)
def test_dask_gwy_save_keeps_peak_memory_far_below_the_map(tmp_path, dtype, missing, unit):
    out = tmp_path / "big.gwy"
    grew = peak_growth(out, dtype, missing, unit)
    # The NPZ save of the same map grows by about 115 MiB (two block rows and what computing them
    # takes, the chunks in flight); the GWY save adds no more than that, far below the 400 MiB
    # map (computing it whole: the map, then its float64 heights and their copy in the file's
    # container, over 1 GiB). Float64 in millimetres also holds its patch (2% of the points).
    assert grew < 160, f"peak RSS grew by {grew} MiB saving a 400 MiB map"
    field = gwyfile.load(str(out))["/0/data"]
    assert (field["yres"], field["xres"]) == (6400, 8192)
    expected = np.random.default_rng([7, 1]).standard_normal(size=(256, 4096)).astype(dtype)
    if missing == "missing":
        expected[::97, ::89] = np.nan
    back = load_gwy(out)["height_map"]  # the record's fingerprint checked against the data
    assert back.dtype == np.dtype(dtype)
    assert np.array_equal(back[7 * 256 : 8 * 256, 4096:], expected, equal_nan=True)


@pytest.mark.slow
def test_a_save_whose_blocks_compute_on_a_local_cluster_is_the_same_file(tmp_path):
    # The blocks run in worker processes: the patch, the missing points and the fingerprint are
    # gathered from the values written here.
    distributed = pytest.importorskip("distributed")
    a = surface((300, 90), np.float64)
    a[40:44, 10] = np.nan
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        memory, lazy = both(tmp_path, a, {"units": "mm", "mask": a > 5}, (60, 45))
    assert lazy == memory
    assert b"/tmd_nb/__patch_at__\0" in lazy and b"/tmd_nb/__missing__\0" in lazy


def test_heights_summing_beyond_float64_are_computed_whole_and_filled_within_their_range(tmp_path, whole):
    a = np.full((20, 10), 1.5e308)
    a[3, 3] = np.nan
    a[5, 5] = 1.0e308
    memory, lazy = both(tmp_path, a, {"units": "m"}, (6, 4))
    assert lazy == memory and len(whole) == 2  # the row sums overflow: the mean is taken term by term
    assert 1.0e308 <= gwyfile.load(str(tmp_path / "dask.gwy"))["/0/data"].data[3, 3] <= 1.5e308
    assert_identical({"height_map": a, "units": "m"}, load_gwy(tmp_path / "dask.gwy"))
