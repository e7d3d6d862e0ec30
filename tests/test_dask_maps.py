"""Maps bigger than memory: Dask arrays streamed into NPY/NPZ, and open_dask / load_metadata windows."""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import chunks
from tmd_nb.errors import FormatError
from tmd_nb.storage import _io, archive, deflate

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture
def small_chunks(monkeypatch):
    """Many deflate chunks (so many restart points) and I/O pieces on small arrays."""
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(_io, "CHUNK", 1 << 13)
    monkeypatch.setattr(archive, "_dos_time", lambda: (0x6000, 0x5821))  # same timestamp in both files


def surface(shape=(301, 97), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).cumsum(axis=1).astype(dtype)


# ------------------------------------------------------------------------------------------
# writing: byte-identical to the same data in memory
# ------------------------------------------------------------------------------------------

SAVES = {
    "npy": lambda data, path: tmd_nb.export_to_npy(data["height_map"], path),
    "npz-stored": lambda data, path: tmd_nb.export_to_npz(data, path, compress=False),
    "npz-default": lambda data, path: tmd_nb.export_to_npz(data, path),
    "npz-isal-1": lambda data, path: tmd_nb.export_to_npz(data, path, level=1),
    "npz-zlib-6": lambda data, path: tmd_nb.export_to_npz(data, path, level=6),
}


@pytest.mark.parametrize("block", [(7, 13), (50, 97), (301, 97), (1, 5), (128, 40)])
@pytest.mark.parametrize("how", sorted(SAVES))
def test_dask_save_is_byte_identical_to_the_save_in_memory(tmp_path, small_chunks, how, block):
    a = surface()
    mask = a > 0
    in_memory = {"height_map": a, "mask": mask, "nested": {"calibration": a[:3, :5]}, "unit": "um"}
    lazy = {
        "height_map": da.from_array(a, chunks=block),
        "mask": da.from_array(mask, chunks=block),
        "nested": {"calibration": da.from_array(a[:3, :5], chunks=2)},
        "unit": "um",
    }
    SAVES[how](in_memory, tmp_path / "memory")
    SAVES[how](lazy, tmp_path / "dask")
    expected = (tmp_path / "memory").read_bytes()
    assert (tmp_path / "dask").read_bytes() == expected
    if how != "npy":
        back = tmd_nb.load_from_npz(tmp_path / "dask")
        assert np.array_equal(back["height_map"], a) and np.array_equal(back["mask"], mask)
        assert np.array_equal(back["nested"]["calibration"], a[:3, :5])


def test_save_of_a_dask_array_of_unknown_shape_is_refused_before_writing(tmp_path):
    x = da.from_array(surface(), chunks=50)
    unknown = x[x[:, 0] > 0]
    with pytest.raises(ValueError, match=r"^data\['height_map'\] is a Dask array of unknown shape \(nan, 97\); "):
        tmd_nb.export_to_npz({"height_map": unknown}, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_a_3d_dask_array_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^data must be 2-D, but has shape \(2, 3, 4\) \(3-D\)$"):
        tmd_nb.export_to_npy(da.zeros((2, 3, 4)), tmp_path / "out.npy")


def test_tmd_computes_a_dask_height_map_first(tmp_path):
    a = surface(dtype=np.float32)
    tmd_nb.export_to_tmd({"height_map": da.from_array(a, chunks=40)}, tmp_path / "lazy.tmd")
    tmd_nb.export_to_tmd({"height_map": a}, tmp_path / "memory.tmd")
    assert (tmp_path / "lazy.tmd").read_bytes() == (tmp_path / "memory.tmd").read_bytes()


def test_a_dask_array_is_still_not_an_exportable_variable():
    # Completion and the panels must never compute a user's lazy array to list it.
    assert tmd_nb.height_map_of(da.zeros((4, 4))) is None


BOUNDED = textwrap.dedent(
    """
    import sys
    import dask, dask.array as da, numpy as np
    import tmd_nb
    from memory_probe import reset_peak, vm  # the child runs in the tests folder

    dask.config.set(scheduler="synchronous")  # one block row computed at a time, on this thread
    rows, cols = 16384, 16384  # 1 GiB of float32
    band = 256  # 16 MiB block rows
    x = da.map_blocks(
        lambda b, block_info=None: np.random.default_rng(block_info[None]["chunk-location"][0])
        .standard_normal(size=b.shape, dtype=np.float32),
        da.empty((rows, cols), dtype=np.float32, chunks=(band, 4096)),
        dtype=np.float32,
    )
    before = reset_peak()  # bytes
    tmd_nb.export_to_npz({"height_map": x}, sys.argv[1])
    peak = vm("VmHWM")
    print(before // 2**20, peak // 2**20)
    """
)


@pytest.mark.slow
def test_dask_export_keeps_peak_memory_far_below_the_map(tmp_path):
    out = tmp_path / "big.npz"
    run = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert run.returncode == 0, run.stderr
    before_mib, peak_mib = map(int, run.stdout.split())
    assert peak_mib < 512, f"peak RSS {peak_mib} MiB (before the export: {before_mib} MiB) for a 1 GiB map"
    windows = chunks.open_windows(out)
    assert windows.shape == (16384, 16384) and len(windows.index) > 100
    rng = np.random.default_rng(40)  # block row 40 holds rows 10240-10495
    expected = rng.standard_normal(size=(256, 4096), dtype=np.float32)[:, :100]
    assert np.array_equal(windows[10240:10496, :100], expected)


# ------------------------------------------------------------------------------------------
# reading windows
# ------------------------------------------------------------------------------------------

LAYOUTS = {
    "npy": lambda a, p: tmd_nb.export_to_npy(a, p),
    "npy-fortran": lambda a, p: tmd_nb.export_to_npy(np.asfortranarray(a), p),
    "npz-stored": lambda a, p: tmd_nb.export_to_npz({"height_map": a}, p, compress=False),
    "npz-indexed": lambda a, p: tmd_nb.export_to_npz({"height_map": a}, p),
    "npz-indexed-fortran": lambda a, p: tmd_nb.export_to_npz({"height_map": np.asfortranarray(a)}, p),
    "npz-zlib-9": lambda a, p: tmd_nb.export_to_npz({"height_map": a}, p, level=9),
    "numpy-savez-compressed": lambda a, p: np.savez_compressed(p, height_map=a),
    "numpy-savez": lambda a, p: np.savez(p, height_map=a),
}
KINDS = {
    "npy": "mmap",
    "npy-fortran": "mmap",
    "npz-stored": "mmap",
    "npz-indexed": "deflate",
    "npz-indexed-fortran": "deflate",
    "npz-zlib-9": "from-start",
    "numpy-savez-compressed": "from-start",
    "numpy-savez": "mmap",
}
WINDOWS = [
    (slice(3, 200), slice(5, 90)),
    (slice(290, None), slice(None)),
    (5,),
    (-1, slice(2, 50, 4)),
    (slice(None, None, -3), 7),
    (slice(0, 0),),
    (np.int64(7), np.int64(-2)),
    ([5, 1, -3], slice(None, 9)),
    (slice(4, 60), np.array([0, 96, 5, 5])),
    (np.arange(301) % 7 == 0, 3),
]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_windows_and_dask_arrays_equal_the_loaded_map(tmp_path, small_chunks, layout):
    a = surface(dtype=np.dtype(">f8") if "npy" in layout else np.float32)
    path = tmp_path / "map.npz"
    if layout.startswith("npy"):
        path = tmp_path / "map.npy"
    LAYOUTS[layout](a, path)
    windows = chunks.open_windows(path)
    assert windows.kind == KINDS[layout]
    assert windows.dtype == a.dtype and windows.shape == a.shape
    for key in WINDOWS:
        assert np.array_equal(windows[key], a[key]), key
    x = tmd_nb.open_dask(path, chunks=(64, 40))
    assert x.name.startswith(f"tmd_nb-{KINDS[layout]}-")
    assert x.dtype == a.dtype and x.chunks[0][:2] == (64, 64)
    assert np.array_equal(x.compute(), a)
    assert np.array_equal(x[100:150, 3:9].compute(), a[100:150, 3:9])


def test_auto_chunks_of_a_deflated_member_are_bands_of_whole_rows(tmp_path, small_chunks):
    tmd_nb.export_to_npz({"height_map": surface()}, tmp_path / "map.npz")
    assert tmd_nb.open_dask(tmp_path / "map.npz").chunks[1] == (97,)
    tmd_nb.export_to_npz({"height_map": np.asfortranarray(surface())}, tmp_path / "f.npz")
    assert tmd_nb.open_dask(tmp_path / "f.npz").chunks[0] == (301,)


def test_a_window_inflates_only_the_chunks_it_touches(tmp_path, small_chunks):
    """Corrupt the compressed bytes of the last chunk: a window at the top still reads, the whole map does not."""
    a = surface(shape=(400, 256))  # 400 KiB: 25 chunks of 16 KiB
    path = tmp_path / "map.npz"
    tmd_nb.export_to_npz({"height_map": a}, path)
    windows = chunks.open_windows(path)
    last_start = windows.data_offset + windows.index[-1][0]
    raw = bytearray(path.read_bytes())
    raw[last_start + 10 : last_start + 60] = bytes(50)
    path.write_bytes(bytes(raw))
    assert np.array_equal(tmd_nb.open_dask(path)[:32, 100:140].compute(), a[:32, 100:140])
    with pytest.raises(FormatError, match=r"member 'height_map.npy' is corrupt"):
        tmd_nb.open_dask(path).compute()


def _index_field(windows) -> bytes:
    flat = [x for pair in windows.index for x in pair]
    return struct.pack(f"<HH{len(flat)}Q", archive._INDEX_EXTRA, 8 * len(flat), *flat)


def _crcs_field(windows) -> bytes:
    return struct.pack(f"<HH{len(windows.crcs)}I", archive._CRCS_EXTRA, 4 * len(windows.crcs), *windows.crcs)


def _edit(path, old: bytes, new: bytes) -> None:
    raw = path.read_bytes()
    assert raw.count(old) == 1 and len(old) == len(new)
    path.write_bytes(raw.replace(old, new))


def _as_older_tmd_nb(path, windows) -> None:
    """Make the file one of a tmd_nb before the chunk checksums: their field becomes one nobody knows."""
    field = _crcs_field(windows)
    _edit(path, field, struct.pack("<H", 0x7878) + field[2:])


SAVED_AGAIN = {
    "npy": (tmd_nb.export_to_npy, lambda a, p: tmd_nb.export_to_npy(a, p)),
    "npz-stored": ("npz", lambda a, p: tmd_nb.export_to_npz({"height_map": a}, p, compress=False)),
    "npz-indexed": ("npz", lambda a, p: tmd_nb.export_to_npz({"height_map": a}, p)),
    "numpy-savez-compressed": ("npz", lambda a, p: np.savez_compressed(p, height_map=a)),
}


@pytest.mark.parametrize("layout", sorted(SAVED_AGAIN))
def test_a_file_saved_again_after_open_dask_is_an_error_not_other_numbers(tmp_path, small_chunks, layout):
    """The file saved again with another dtype: the old array's layout would read nonsense from it."""
    save = SAVED_AGAIN[layout][1]
    path = tmp_path / ("map.npy" if layout == "npy" else "map.npz")
    save(surface(dtype=np.float32), path)
    x = tmd_nb.open_dask(path, chunks=(64, 97))
    save(surface(dtype=np.float64, seed=1), path)
    message = rf"^'{path}' has changed since open_dask opened it \(replaced or rewritten\); open it again$"
    with pytest.raises(FormatError, match=message):
        x.compute()
    with pytest.raises(FormatError, match=message):
        x[100:105].compute()


def test_a_file_rewritten_in_place_after_open_dask_is_an_error(tmp_path, small_chunks):
    path = tmp_path / "map.npy"
    tmd_nb.export_to_npy(surface(), path)
    x = tmd_nb.open_dask(path, chunks=(64, 97))
    with open(path, "r+b") as f:  # the same inode, a new length
        f.seek(0, os.SEEK_END)
        f.write(b"\0" * 388)
    with pytest.raises(FormatError, match=r"map.npy' has changed since open_dask opened it"):
        x[:5].compute()


def _shift_one_point(path, windows, rows: int) -> tuple[int, bytes]:
    """Move the middle restart point of the index ``rows`` rows back; return its row and the new field."""
    k = len(windows.index) // 2
    row_bytes = windows.shape[1] * windows.dtype.itemsize
    c, u = windows.index[k]
    index = list(windows.index)
    index[k] = (c, u - rows * row_bytes)
    flat = [x for pair in index for x in pair]
    field = struct.pack(f"<HH{len(flat)}Q", archive._INDEX_EXTRA, 8 * len(flat), *flat)
    _edit(path, _index_field(windows), field)
    return (u - windows.header_size) // row_bytes, field


def test_a_restart_index_off_by_one_row_is_refused_by_open_dask(tmp_path, small_chunks):
    path = tmp_path / "map.npz"
    tmd_nb.export_to_npz({"height_map": surface()}, path)
    _shift_one_point(path, chunks.open_windows(path), 1)
    with pytest.raises(FormatError, match=r"^'.*map.npz' member 'height_map.npy' has a damaged tmd_nb chunk index: "):
        tmd_nb.open_dask(path)
    with pytest.raises(FormatError, match=r"map.npz' member 'height_map.npy' has a malformed tmd_nb chunk index"):
        tmd_nb.load(path)


def test_an_older_file_with_its_index_off_by_one_row_is_an_error_in_every_window_that_reads_there(
    tmp_path, small_chunks
):
    a = surface()
    path = tmp_path / "map.npz"
    tmd_nb.export_to_npz({"height_map": a}, path)
    windows = chunks.open_windows(path)
    _as_older_tmd_nb(path, windows)
    older = chunks.open_windows(path)
    assert older.crcs is None and older.index == windows.index
    assert np.array_equal(tmd_nb.open_dask(path)[95:140].compute(), a[95:140])  # older files still read
    row, _ = _shift_one_point(path, older, 1)
    x = tmd_nb.open_dask(path, chunks=(1, 97))
    for first in (row - 3, row, row + 1):
        with pytest.raises(FormatError, match=r"map.npz' member 'height_map.npy' is corrupt or has a damaged"):
            x[first : first + 2].compute()
    assert np.array_equal(x[:5].compute(), a[:5])  # far from the damage, the stretches still check out


@pytest.mark.parametrize("older", [False, True], ids=["checksums", "older-file"])
def test_a_flipped_byte_in_a_compressed_block_is_an_error_naming_file_and_member(tmp_path, small_chunks, older):
    a = surface()
    path = tmp_path / "map.npz"
    tmd_nb.export_to_npz({"height_map": a}, path)
    windows = chunks.open_windows(path)
    if older:
        _as_older_tmd_nb(path, windows)
    (c0, u0), (c1, _) = windows.index[1], windows.index[2]
    raw = bytearray(path.read_bytes())
    row_bytes = 97 * 4
    first = -(-(u0 - windows.header_size) // row_bytes)  # the first row that starts in this stretch
    found = False
    for pos in range(windows.data_offset + c0 + 40, windows.data_offset + c1 - 8, 97):
        raw[pos] ^= 0x10
        path.write_bytes(bytes(raw))
        raw[pos] ^= 0x10
        try:
            tmd_nb.open_dask(path)[first : first + 2].compute()
        except FormatError as exc:
            assert str(exc).startswith(f"'{path}' member 'height_map.npy' "), str(exc)
            found = True
        else:
            # No error: an older file's window checks lengths only, so the flipped byte may go unseen.
            assert older, f"a flipped byte at {pos} went unseen"
    assert found


def test_a_flipped_byte_in_a_member_without_index_is_an_error_in_any_window(tmp_path):
    a = surface()
    path = tmp_path / "map.npz"
    np.savez_compressed(path, height_map=a)
    windows = chunks.open_windows(path)
    raw = bytearray(path.read_bytes())
    raw[windows.data_offset + windows.csize - 200] ^= 0x04  # near the end of the stream
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"map.npz' member 'height_map.npy' is corrupt"):
        tmd_nb.open_dask(path)[:2].compute()


def test_chunk_checksums_are_written_beside_every_index_and_add_up_to_the_members_crc(tmp_path, monkeypatch):
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 12)
    monkeypatch.setattr(deflate, "MAX_INDEX", 5)  # thinned: the pieces' checksums are merged
    monkeypatch.setattr(deflate, "SPLIT_MIN", 1 << 13)  # "balanced": libdeflate for the last part only
    a = surface(shape=(200, 97))
    for level in (1, 2, 3, "balanced"):
        path = tmd_nb.export_to_npz({"height_map": a}, tmp_path / f"{level}.npz", level=level)
        windows = chunks.open_windows(path)
        assert windows.index and len(windows.crcs) == len(windows.index) + 1
        with open(path, "rb") as f:
            data = b"".join(windows._inflate(f, 0, windows.usize))
        bounds = [0, *(u for _, u in windows.index), windows.usize]
        assert [zlib.crc32(data[u0:u1]) for u0, u1 in itertools.pairwise(bounds)] == windows.crcs
        assert np.array_equal(tmd_nb.open_dask(path).compute(), a)
    assert not chunks.open_windows(tmd_nb.export_to_npz({"height_map": a}, tmp_path / "9.npz", level=9)).index


def test_load_metadata_reads_everything_but_the_heights(tmp_path, monkeypatch):
    a = surface()
    meta = {"unit": "um", "mask": a > 0, "nested": {"when": (1, 2.5)}}
    tmd_nb.export_to_npz({"height_map": a, **meta}, tmp_path / "map.npz")

    def refuse(*args, **kwargs):  # the height map's data must not be inflated
        raise AssertionError("the height map was read")

    monkeypatch.setattr(archive, "inflate_rest", refuse, raising=True)
    monkeypatch.setattr(archive, "inflate_whole", refuse, raising=True)  # libdeflate's one-call path
    with pytest.raises(AssertionError):
        tmd_nb.load(tmp_path / "map.npz")
    monkeypatch.undo()
    back = tmd_nb.load_metadata(tmp_path / "map.npz")
    assert list(back) == ["unit", "mask", "nested"]
    assert back["unit"] == "um" and back["nested"] == {"when": (1, 2.5)} and np.array_equal(back["mask"], a > 0)
    tmd_nb.export_to_npy(a, tmp_path / "map.npy")
    assert tmd_nb.load_metadata(tmp_path / "map.npy") == {}


def test_load_metadata_of_a_tmd_scan(tmd_samples):
    path = sorted(tmd_samples.glob("v2_*.tmd"))[0]
    full = tmd_nb.load(path)
    full.pop("height_map")
    assert tmd_nb.load_metadata(path) == full


def test_open_dask_refuses_other_formats_and_maps_without_height_map(tmp_path):
    tmd_nb.export_to_tmd(surface(), tmp_path / "scan.tmd")
    with pytest.raises(
        FormatError, match=r"scan.tmd' is a TMD file; open_dask reads NPY and NPZ files: convert it first"
    ):
        tmd_nb.open_dask(tmp_path / "scan.tmd")
    np.savez(tmp_path / "other.npz", heights=surface())
    with pytest.raises(FormatError, match=r"other.npz' has no 'height_map' array$"):
        tmd_nb.open_dask(tmp_path / "other.npz")


def test_open_dask_names_the_extra_to_install_without_dask(tmp_path, monkeypatch):
    tmd_nb.export_to_npy(surface(), tmp_path / "map.npy")
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"^open_dask needs dask: pip install 'tmd_nb\[dask\]'$"):
        tmd_nb.open_dask(tmp_path / "map.npy")


def test_the_format_layer_imports_without_dask():
    code = (
        "import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
        "import tmd_nb, tmd_nb.chunks, tmd_nb.batch\n"
        "print(sorted(m for m in sys.modules if m.startswith(('dask', 'distributed', 'IPython'))))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['dask', 'distributed']"  # only the blocked placeholders


# ------------------------------------------------------------------------------------------
# on a real cluster
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.slow
def test_an_open_dask_window_computes_on_a_local_cluster(tmp_path, cluster_client):
    a = surface(shape=(2000, 700))
    path = tmp_path / "map.npz"
    tmd_nb.export_to_npz({"height_map": a}, path)  # 5.6 MB: two restart points
    x = tmd_nb.open_dask(path, chunks=(250, 700))
    window = x[900:1600, 100:356]
    assert np.array_equal(cluster_client.compute(window).result(), a[900:1600, 100:356])
    total = cluster_client.compute(x.sum(dtype=np.float64)).result()
    assert total == pytest.approx(a.sum(dtype=np.float64))
    workers = cluster_client.run(os.getpid)
    assert len(set(workers.values()) - {os.getpid()}) == 2


@pytest.mark.slow
def test_a_file_saved_again_is_an_error_on_a_local_cluster_too(tmp_path, cluster_client):
    path = tmp_path / "map.npz"
    tmd_nb.export_to_npz({"height_map": surface(shape=(400, 100))}, path)
    x = tmd_nb.open_dask(path, chunks=(100, 100))
    tmd_nb.export_to_npz({"height_map": surface(shape=(400, 100), dtype=np.float64)}, path)
    with pytest.raises(FormatError, match=r"^'.*map.npz' has changed since open_dask opened it"):
        cluster_client.compute(x[150:250]).result()


def test_dask_slicing_reads_only_the_window(tmp_path, small_chunks, monkeypatch):
    tmd_nb.export_to_npz({"height_map": surface()}, tmp_path / "map.npz")
    x = tmd_nb.open_dask(tmp_path / "map.npz", chunks=(100, 97))
    asked = []
    read = chunks.HeightMapWindows.__getitem__
    monkeypatch.setattr(
        chunks.HeightMapWindows, "__getitem__", lambda self, key: (asked.append(key), read(self, key))[1]
    )
    x[10:42, 20:40].compute(scheduler="synchronous")
    assert asked == [(slice(10, 42, None), slice(20, 40, None))]
    asked.clear()
    x[[3, 250]].compute(scheduler="synchronous")
    assert len(asked) == 2 and all(k[1] == slice(0, 97, None) for k in asked)


@pytest.mark.parametrize("save", [tmd_nb.export_to_x3p, tmd_nb.export_to_gwy, tmd_nb.export_to_sdf])
def test_x3p_and_gwy_compute_a_dask_height_map_first(tmp_path, save):
    a = surface(shape=(40, 30), dtype=np.float64)
    lazy = save({"height_map": da.from_array(a, chunks=7), "mask": da.from_array(a > 0, chunks=9)}, tmp_path / "lazy")
    back = tmd_nb.load(lazy)
    assert np.array_equal(back["height_map"], a) and np.array_equal(back["mask"], a > 0)


_SAVED: dict[str, bytes] = {}


@given(
    kind=st.sampled_from(["indexed", "older", "from-start"]),
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=3),
    rows=st.tuples(st.integers(0, 300), st.integers(1, 40)),
)
def test_a_damaged_file_gives_a_window_of_the_saved_map_or_a_format_error(tmp_path, kind, edits, rows):
    """Bytes changed anywhere: a window is the map as saved, or a FormatError naming the file; never other numbers."""
    a = surface()
    path = tmp_path / "fuzz.npz"
    if kind not in _SAVED:  # each kind saved once: the examples differ in their damage only
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)  # 7 restart points
            if kind == "from-start":
                np.savez_compressed(path, height_map=a)
            else:
                tmd_nb.export_to_npz({"height_map": a, "unit": "um"}, path)
        if kind == "older":
            _as_older_tmd_nb(path, chunks.open_windows(path))
        _SAVED[kind] = path.read_bytes()
    raw = bytearray(_SAVED[kind])
    for pos, xor in edits:
        raw[pos % len(raw)] ^= xor
    path.write_bytes(bytes(raw))
    r0, n = rows
    try:
        window = tmd_nb.open_dask(path, chunks=(50, 97))[r0 : r0 + n].compute(scheduler="synchronous")
    except FormatError as exc:
        assert str(exc).startswith(f"'{path}'") and "\n" not in str(exc), str(exc)
        return
    if kind != "older":  # an older file's windows check the lengths of what they read, not its bytes
        assert np.array_equal(window, a[r0 : r0 + n])
