"""Attacks on how a .gwy file is read: piece by piece as the structure walk reaches it, its large
number arrays (holes) only when built, the channel's heights a block at a time into per-thread
scratch buffers, base64 through pybase64 or binascii.

What is attacked: bytes of the file's buffer that no read ever reached (uninitialised memory handed
out as heights or mask), an array read by two reads at two times, a file rewritten or resized
between the walk and the reads of its arrays, a huge sparse file, base64 the two decoders disagree
on, and loads from several threads, inside the block pool and in forked children. Every result is
compared with gwyfile (an independent reader), Gwyddion itself, or what was saved.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gwyfile
import numpy as np
import pytest
from conftest import require
from gwyfile.objects import GwyContainer, GwyDataField
from helpers import assert_identical, open_descriptors, small_gwy_reads

from tmd_nb import FormatError, ModifiedFileWarning, export_to_gwy, load_gwy
from tmd_nb.formats import gwy
from tmd_nb.storage import blockwise, libraries

SAMPLES = Path("/work/shared/data")


def foreign(path: Path, items: dict) -> Path:
    """A file gwyfile writes (another writer than tmd_nb's), its entries in the order given."""
    container = GwyContainer()
    for key, value in items.items():
        container[key] = value
    container.tofile(str(path))
    return path


def peer(path: Path) -> dict:
    return gwyfile.load(str(path))


# --- bytes no read reached -------------------------------------------------------------------


def test_a_channel_ending_the_file_is_read_whole_at_real_thresholds(tmp_path: Path) -> None:
    """gwyfile writes a data field's ``data`` last: a file whose only entry is its channel ends with
    the heights. 720 KB of them: more than the first read, less than a hole. The walk passed over
    them and nothing read them: their tail came from the buffer's uninitialised memory."""
    data = np.random.default_rng(0).normal(size=(300, 300)) + 5.0
    path = foreign(tmp_path / "g.gwy", {"/0/data": GwyDataField(data, si_unit_xy="m", si_unit_z="m")})
    assert gwy.READ_FIRST < os.path.getsize(path) < gwy.READ_FIRST + gwy.HOLE_MIN
    out = load_gwy(path)["height_map"]
    np.testing.assert_array_equal(out, peer(path)["/0/data"].data)
    np.testing.assert_array_equal(out, data)


def test_a_mask_ending_the_file_is_read_whole(tmp_path: Path, monkeypatch) -> None:
    data = np.random.default_rng(1).normal(size=(40, 50))
    mask = (data > 0).astype(np.float64)
    path = foreign(tmp_path / "g.gwy", {"/0/data": GwyDataField(data), "/0/mask": GwyDataField(mask)})
    small_gwy_reads(monkeypatch)
    monkeypatch.setattr(gwy, "HOLE_MIN", 1 << 20)  # the mask is no hole: read by the walk, or not at all
    out = load_gwy(path)
    np.testing.assert_array_equal(out["height_map"], data)
    np.testing.assert_array_equal(out["mask"], mask > 0.5)


@pytest.mark.parametrize("last", ["/0/data", "/0/mask", "/x"])
@pytest.mark.parametrize("hole_min", [64, 1 << 20])
def test_any_entry_order_reads_as_gwyfile_reads_it(tmp_path: Path, monkeypatch, last: str, hole_min: int) -> None:
    rng = np.random.default_rng(2)
    data, other = rng.normal(size=(40, 50)), rng.normal(size=(20, 30))
    items = {
        "/1/data": GwyDataField(other),
        "/0/data/title": "t" * 300,
        "/0/mask": GwyDataField((data > 0).astype(np.float64)),
        "/x": 2.5,
        "/0/data": GwyDataField(data, si_unit_z="m"),
    }
    items[last] = items.pop(last)
    path = foreign(tmp_path / "g.gwy", items)
    small_gwy_reads(monkeypatch)
    monkeypatch.setattr(gwy, "HOLE_MIN", hole_min)
    out, expected = load_gwy(path), peer(path)
    np.testing.assert_array_equal(out["height_map"], expected["/0/data"].data)
    np.testing.assert_array_equal(out["mask"], expected["/0/mask"].data > 0.5)
    assert_identical(out, load_gwy(path, progress=lambda done, total: None))


# --- files changed while read ----------------------------------------------------------------


def test_an_array_read_by_two_reads_of_a_file_rewritten_between_them_is_of_one_time(
    tmp_path: Path, monkeypatch
) -> None:
    """Real thresholds: the heights begin in the first 256 KiB read and end in the next. The file,
    rewritten in place between the two reads, gave their first half old and their second half new."""
    data = np.arange(100 * 200, dtype=np.float64).reshape(100, 200) + 1.0
    items = {"/0/data/title": "t" * 250_000, "/0/data": None, "/x": "end"}

    def write(path: Path, values: np.ndarray) -> Path:
        return foreign(path, {**items, "/0/data": GwyDataField(values, si_unit_z="m")})

    path, new = write(tmp_path / "a.gwy", data), write(tmp_path / "b.gwy", -data).read_bytes()
    real, reads = gwy._Reader._read, []

    def rewrite_after_the_first(self, start: int, stop: int) -> None:
        reads.append(start)
        if len(reads) == 2:
            path.write_bytes(new)
        real(self, start, stop)

    monkeypatch.setattr(gwy._Reader, "_read", rewrite_after_the_first)
    out = load_gwy(path)["height_map"]
    assert len(reads) > 1
    assert np.array_equal(out, data) or np.array_equal(out, -data)


@pytest.mark.parametrize("kind", ["foreign", "tmd_nb"])
def test_a_file_resized_between_the_walk_and_the_heights_is_refused(tmp_path: Path, monkeypatch, kind: str) -> None:
    """Rewritten in place with another layout (the heights elsewhere) after the walk: the heights
    were read at the places the old layout gave, from the new file: other bytes, no value the file
    ever held (with no warning for another writer's file, with ModifiedFileWarning for tmd_nb's)."""
    data = np.arange(30 * 40, dtype=np.float64).reshape(30, 40)
    path, other = tmp_path / "a.gwy", tmp_path / "b.gwy"
    if kind == "foreign":
        for p, title in ((path, "a"), (other, "a" * 9)):
            foreign(p, {"/0/data/title": title, "/0/data": GwyDataField(data, si_unit_z="m")})
        target, name = gwy._Entries, "copy"
    else:
        # a unitless height: si_unit_z "" instead of "m", and the heights one byte earlier
        export_to_gwy({"height_map": data, "units": "mm"}, path)
        export_to_gwy({"height_map": data, "height_unit": "", "lateral_unit": "mm"}, other)
        target, name = gwy.embedded, "_restore_quickly"
    new = other.read_bytes()
    real = getattr(target, name)

    def rewrite(*args, **kwargs):
        path.write_bytes(new)
        return real(*args, **kwargs)

    small_gwy_reads(monkeypatch)
    monkeypatch.setattr(target, name, rewrite)
    opened = open_descriptors()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModifiedFileWarning)
        with pytest.raises(FormatError, match=r"a\.gwy' changed while being read \(it was [\d,]+ bytes, it is"):
            load_gwy(path)
    assert open_descriptors() == opened


def test_a_huge_sparse_file_is_refused_before_its_buffer_is_allocated(tmp_path: Path) -> None:
    """1 TiB that takes a few KB of disk: the reader allocated a buffer of the file's size first (a
    MemoryError); no Gwyddion file is larger than its one container of at most 4 GiB."""
    path = tmp_path / "sparse.gwy"
    with open(path, "wb") as f:
        f.write(b"GWYPGwyContainer\0" + b"\xff\xff\xff\xff")
        try:
            f.truncate(1 << 40)
        except OSError:
            pytest.skip("this file system holds no 1 TiB sparse file")
    opened = open_descriptors()
    with pytest.raises(FormatError, match=r"sparse\.gwy' is not a Gwyddion file: it is 1,099,511,627,776 bytes"):
        load_gwy(path)
    assert open_descriptors() == opened


# --- base64 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["QUJD=", "QUJD====", "QQ==="])
def test_padding_after_a_whole_group_is_refused_with_or_without_pybase64(monkeypatch, text: str) -> None:
    """binascii's strict mode takes padding after a whole group, pybase64 refuses it: a file loaded or
    failed depending on whether pybase64 is installed."""
    with pytest.raises(ValueError):
        libraries.b64decode(text)
    monkeypatch.setattr(libraries, "pybase64", None)
    with pytest.raises(ValueError):
        libraries.b64decode(text)
    with pytest.raises(ValueError):
        libraries.b64decode(memoryview(text.encode("ascii")))
    assert libraries.b64decode("QUJD") == b"ABC" and libraries.b64decode("QQ==") == b"A"


# --- what held ---------------------------------------------------------------------------------


def _saved_maps(tmp_path: Path) -> list[tuple[Path, dict]]:
    rng = np.random.default_rng(4)
    cases = []
    for i in range(6):
        hm = rng.normal(size=(int(rng.integers(5, 40)), int(rng.integers(5, 40)))) * 0.37
        if i % 3 == 0:
            hm[hm > 0.7] = np.nan
        if i % 3 == 1:
            hm = hm.astype(np.float32)
        data = {"height_map": hm, "i": i}
        cases.append((Path(export_to_gwy(data, tmp_path / f"{i}.gwy")), data))
    hm = rng.normal(size=(17, 23))
    cases.append((foreign(tmp_path / "f.gwy", {"/0/data": GwyDataField(hm)}), {"height_map": hm}))
    return cases


def _check(case: tuple[Path, dict]) -> bool:
    path, data = case
    out = load_gwy(path)
    hm = data["height_map"]
    return out["height_map"].dtype == hm.dtype and out["height_map"].tobytes() == hm.tobytes()


def test_loads_from_many_threads_share_no_scratch_values(tmp_path: Path, monkeypatch) -> None:
    cases = _saved_maps(tmp_path)
    small_gwy_reads(monkeypatch)
    opened = open_descriptors()
    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(_check, [cases[i % len(cases)] for i in range(150)]))
    assert open_descriptors() == opened


def test_a_load_inside_a_thread_of_the_block_pool(tmp_path: Path, monkeypatch) -> None:
    cases = _saved_maps(tmp_path)
    small_gwy_reads(monkeypatch)
    blockwise.map_blocks(4096, 1, lambda start, stop: None)  # the pool exists
    if blockwise._pool is None:
        pytest.skip("one core: no pool")
    assert blockwise._pool.submit(lambda: all(_check(c) for c in cases)).result()


def test_forked_children_load_after_the_parent_read_blocks(tmp_path: Path, monkeypatch) -> None:
    cases = _saved_maps(tmp_path)
    small_gwy_reads(monkeypatch)
    assert all(_check(c) for c in cases)  # the pool and this thread's scratch buffer in use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert all(pool.map(_check, cases))


@pytest.mark.parametrize("name", ["di-3.di", "metropro-1.dat", "10x10-one_channel_without_name.ibw"])
def test_files_gwyddion_wrote_read_as_gwyfile_reads_them(tmp_path: Path, name: str) -> None:
    """Instrument files Gwyddion converted (MBs: real holes and read-ahead), at the real thresholds."""
    require(shutil.which("gwyddion") is not None, "Gwyddion is not installed")
    source = SAMPLES / "instruments" / name
    require(source.exists(), f"{source} is not there")
    out = tmp_path / "g.gwy"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    subprocess.run(["gwyddion", f"--convert-to-gwy={out}", str(source)], check=True, capture_output=True, env=env)
    expected = peer(out)
    channel = min(int(k.split("/")[1]) for k in expected if k.endswith("/data") and k.count("/") == 2)
    loaded = load_gwy(out)
    np.testing.assert_array_equal(loaded["height_map"], expected[f"/{channel}/data"].data)
    assert_identical(loaded, load_gwy(out, progress=lambda done, total: None))


def test_gwyddion_reads_the_metres_tmd_nb_wrote(tmp_path: Path) -> None:
    require(shutil.which("gwyddion") is not None, "Gwyddion is not installed")
    hm = np.random.default_rng(5).normal(size=(40, 50)) * 0.37
    hm[hm > 0.7] = np.nan
    path = Path(export_to_gwy({"height_map": hm, "units": "um", "x_length": 3.0}, tmp_path / "a.gwy"))
    out = tmp_path / "again.gwy"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    subprocess.run(["gwyddion", f"--convert-to-gwy={out}", str(path)], check=True, capture_output=True, env=env)
    mine, theirs = peer(path)["/0/data"], peer(out)["/0/data"]
    np.testing.assert_array_equal(mine.data, theirs.data)
    assert (mine["xreal"], mine["yreal"]) == (theirs["xreal"], theirs["yreal"])
    assert theirs["xreal"] == 3e-6
    finite = np.isfinite(hm)
    np.testing.assert_array_equal(theirs.data[finite], hm[finite] * 1e-6)
