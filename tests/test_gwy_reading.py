"""How a .gwy file is read: as the walk reaches it, its large number arrays only when built, and
the channel's heights a block at a time as they are converted (never whole in the file's buffer).

Most tests lower the thresholds (:data:`gwy.HOLE_MIN`, the first read, the block size) so that a
small file takes every path a large one does; each compares against the whole-file read (the
path taken with a progress callback) or against gwyfile, an independent reader.
"""

from __future__ import annotations

import binascii
import os
import warnings
from pathlib import Path

import gwyfile
import numpy as np
import pytest
from gwyfile.objects import GwyContainer, GwyDataField
from helpers import assert_identical, height_maps, open_descriptors, small_gwy_reads
from hypothesis import given, settings
from hypothesis import strategies as st

from tmd_nb import FormatError, ModifiedFileWarning, export_to_gwy, load_gwy
from tmd_nb.formats import gwy
from tmd_nb.storage import _io, blockwise, embedded, libraries

FAST = settings(max_examples=max(1, settings.default.max_examples // 4))


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    small_gwy_reads(monkeypatch)


def whole(path: Path) -> dict:
    """The load with the file read whole first (a progress callback takes that path)."""
    return load_gwy(path, progress=lambda done, total: None)


def mm_map(shape=(40, 50)) -> np.ndarray:
    """A float64 map in mm: about 2% of its points need the record's patch."""
    rng = np.random.default_rng(3)
    return rng.normal(size=shape) * 0.37


class Reads:
    """Counts the bytes read from files, by the reader's pieces and by the heights' blocks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pieces: list[tuple[int, int]] = []  # (offset, length) of each pread
        real = os.preadv

        def preadv(fd: int, buffers: list, offset: int) -> int:
            n = real(fd, buffers, offset)
            self.pieces.append((offset, n))
            return n

        monkeypatch.setattr(_io.os, "preadv", preadv)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.pieces)


@FAST
@given(hm=height_maps)
def test_every_map_reads_the_same_piece_by_piece_as_whole(tmp_path_factory, hm) -> None:
    path = Path(export_to_gwy({"height_map": hm}, tmp_path_factory.mktemp("m") / "a.gwy"))
    with pytest.MonkeyPatch.context() as mp:
        small_gwy_reads(mp)
        pieces = load_gwy(path)
    assert_identical({"height_map": hm}, pieces)
    assert_identical(pieces, whole(path))


@pytest.mark.parametrize(
    "data",
    [
        {"height_map": mm_map()},
        {"height_map": mm_map().astype(np.float32), "mask": mm_map() > 0.5},
        {"height_map": np.where(mm_map() > 0.6, np.nan, mm_map())},  # missing points, filled and masked
        {"height_map": mm_map(), "units": "um", "x_length": 3.0, "title": "scan"},
    ],
    ids=["mm-patch", "float32-mask", "missing", "um"],
)
def test_maps_of_each_kind_come_back_exactly_read_piece_by_piece(tmp_path: Path, small, data) -> None:
    path = Path(export_to_gwy(data, tmp_path / "a.gwy"))
    assert_identical(data, load_gwy(path))
    assert_identical(data, whole(path))


def test_the_heights_are_read_a_block_at_a_time_and_once(tmp_path: Path, small, monkeypatch) -> None:
    hm = mm_map((64, 64))
    path = Path(export_to_gwy({"height_map": hm}, tmp_path / "a.gwy"))
    reads = Reads(monkeypatch)
    assert_identical({"height_map": hm}, load_gwy(path))
    biggest = max(n for _, n in reads.pieces)
    assert biggest <= blockwise.BLOCK_BYTES < hm.nbytes
    # the heights read by their blocks only, never into the file's buffer too: at most the read-ahead
    # that reached into them before the walk knew they were there is read twice
    assert os.path.getsize(path) <= reads.total <= os.path.getsize(path) + gwy.READ_MAX
    assert len(set(reads.pieces)) == len(reads.pieces)


def test_a_channel_not_loaded_is_never_read(tmp_path: Path, monkeypatch) -> None:
    """Real thresholds: a Gwyddion file whose second channel is 4 MB reads a few KB of it at most."""
    small_data = np.arange(12.0).reshape(3, 4) * 1e-6
    big = np.random.default_rng(0).normal(size=(512, 1024))
    container = GwyContainer()
    container["/0/data"] = GwyDataField(small_data, xreal=4e-6, yreal=3e-6, si_unit_xy="m", si_unit_z="m")
    container["/1/data"] = GwyDataField(big, si_unit_xy="m", si_unit_z="m")
    container["/0/data/title"] = "Height"
    path = tmp_path / "two.gwy"
    container.tofile(str(path))
    reads = Reads(monkeypatch)
    out = load_gwy(path)
    np.testing.assert_array_equal(out["height_map"], gwyfile.load(str(path))["/0/data"].data)
    assert out["title"] == "Height"
    assert reads.total < os.path.getsize(path) - big.nbytes + gwy.READ_FIRST


def test_a_foreign_channel_is_read_straight_into_the_map(tmp_path: Path, small, monkeypatch) -> None:
    data = np.random.default_rng(1).normal(size=(30, 40)) * 1e-6
    container = GwyContainer()
    container["/0/data"] = GwyDataField(data, xreal=4e-5, yreal=3e-5, si_unit_xy="m", si_unit_z="m")
    mask = (data > 0).astype(np.float64)
    container["/0/mask"] = GwyDataField(mask, xreal=4e-5, yreal=3e-5)
    path = tmp_path / "g.gwy"
    container.tofile(str(path))
    reads = Reads(monkeypatch)
    out = load_gwy(path)
    peer = gwyfile.load(str(path))
    np.testing.assert_array_equal(out["height_map"], peer["/0/data"].data)
    np.testing.assert_array_equal(out["mask"], peer["/0/mask"].data > 0.5)
    assert out["height_map"].flags.writeable and out["height_map"].flags.owndata
    assert reads.total <= os.path.getsize(path) + 2 * gwy.READ_MAX  # read-ahead into the two arrays
    assert_identical(out, whole(path))


def shrink_before(monkeypatch, target, name: str, path: Path, size: int) -> None:
    """Truncate ``path`` to ``size`` bytes just before ``target.name`` runs (after the structure was read)."""
    real = getattr(target, name)

    def shrinking(*args, **kwargs):
        os.truncate(path, size)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, shrinking)


def test_a_file_cut_short_while_its_heights_are_read_is_a_format_error(tmp_path: Path, small, monkeypatch) -> None:
    path = Path(export_to_gwy({"height_map": mm_map()}, tmp_path / "a.gwy"))
    shrink_before(monkeypatch, embedded, "_restore_quickly", path, 200)
    with pytest.raises(FormatError, match=r"a\.gwy' is truncated: it shrank while being read \(\d+ of \d+ bytes"):
        load_gwy(path)


def test_a_foreign_file_cut_short_while_its_heights_are_read_is_a_format_error(
    tmp_path: Path, small, monkeypatch
) -> None:
    container = GwyContainer()
    container["/0/data"] = GwyDataField(np.ones((30, 40)), si_unit_xy="m", si_unit_z="m")
    path = tmp_path / "g.gwy"
    container.tofile(str(path))
    shrink_before(monkeypatch, gwy._Entries, "copy", path, 300)
    with pytest.raises(FormatError, match=r"g\.gwy' is truncated: it shrank while being read"):
        load_gwy(path)


def test_heights_rewritten_while_the_file_is_read_load_as_they_now_are(tmp_path: Path, small, monkeypatch) -> None:
    """Changed in place after the structure was read: the record no longer vouches for them, so
    the file's own heights load (with the warning), all of them as they are now, never a mix."""
    hm = mm_map()
    path = Path(export_to_gwy({"height_map": hm}, tmp_path / "a.gwy"))
    raw = path.read_bytes()
    at = raw.index(b"data\0D") + len(b"data\0D") + 4
    changed = np.frombuffer(raw, "<f8", count=hm.size, offset=at) * 2
    real = embedded._restore_quickly

    def rewrite_first(*args, **kwargs):
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(changed.tobytes())
        return real(*args, **kwargs)

    monkeypatch.setattr(embedded, "_restore_quickly", rewrite_first)
    with pytest.warns(ModifiedFileWarning, match="its data changed after tmd_nb wrote it"):
        out = load_gwy(path)
    np.testing.assert_array_equal(out["height_map"].reshape(-1), changed)
    np.testing.assert_array_equal(out["height_map"], gwyfile.load(str(path))["/0/data"].data)


def test_a_file_replaced_while_open_is_read_as_it_was_opened(tmp_path: Path, small, monkeypatch) -> None:
    hm = mm_map()
    path = Path(export_to_gwy({"height_map": hm}, tmp_path / "a.gwy"))
    other = export_to_gwy({"height_map": hm[::-1] * 3}, tmp_path / "b.gwy")
    real = embedded._restore_quickly

    def replace_first(*args, **kwargs):
        os.replace(other, path)
        return real(*args, **kwargs)

    monkeypatch.setattr(embedded, "_restore_quickly", replace_first)
    assert_identical({"height_map": hm}, load_gwy(path))


def test_the_file_is_closed_after_a_load_and_after_a_refusal(tmp_path: Path, small) -> None:
    path = Path(export_to_gwy({"height_map": mm_map()}, tmp_path / "a.gwy"))
    opened = open_descriptors()
    load_gwy(path)
    with open(path, "r+b") as f:  # the record's patch member no longer base64
        raw = f.read()
        f.seek(raw.index(b"/tmd_nb/__patch_at__\0s") + len(b"/tmd_nb/__patch_at__\0s") + 3)
        f.write(b"*")
    with pytest.raises(FormatError, match=r"its tmd_nb entry '__patch_at__' is not valid base64"):
        load_gwy(path)
    assert open_descriptors() == opened


@pytest.mark.parametrize("text", [b"\xff\xfe", "é".encode(), b"QUJD\x80", b"QUJD===="])
def test_a_record_member_of_other_bytes_than_base64_is_a_format_error(tmp_path: Path, small, text) -> None:
    path = Path(export_to_gwy({"height_map": mm_map()}, tmp_path / "a.gwy"))
    raw = path.read_bytes()
    start = raw.index(b"/tmd_nb/__patch_values__\0s") + len(b"/tmd_nb/__patch_values__\0s")
    end = raw.index(b"\0", start)
    path.write_bytes(raw[:start] + text + b"A" * (end - start - len(text)) + raw[end:])
    with pytest.raises(FormatError, match=r"its tmd_nb entry '__patch_values__' is not valid base64"):
        load_gwy(path)


def test_a_record_that_is_not_utf8_is_a_format_error(tmp_path: Path, small) -> None:
    path = Path(export_to_gwy({"height_map": mm_map()}, tmp_path / "a.gwy"))
    raw = path.read_bytes()
    at = raw.index(b'"tmd_nb": ') + 1
    path.write_bytes(raw[:at] + b"\xff" + raw[at + 1 :])
    with pytest.raises(FormatError, match=r"its tmd_nb record is not UTF-8 text \(byte \d+\)"):
        load_gwy(path)


@settings(max_examples=max(20, settings.default.max_examples))
@given(text=st.text(alphabet="AB+/=a9\n é\0-_", max_size=16))
def test_base64_is_read_as_strictly_as_binascii_strict_mode(text: str) -> None:
    """pybase64 (SIMD) accepts no text that binascii's strict mode refuses, and reads the same bytes."""
    try:
        expected: bytes | None = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        expected = None
    for data in (text, text.encode("utf-8"), memoryview(text.encode("utf-8"))):
        try:
            got: bytes | None = libraries.b64decode(data)
        except ValueError:  # binascii.Error is one
            got = None
        assert got is None or got == expected


def test_a_load_without_pybase64_is_the_same(tmp_path: Path, small, monkeypatch) -> None:
    data = {"height_map": mm_map(), "note": b"bytes \x00 kept"}
    path = Path(export_to_gwy(data, tmp_path / "a.gwy"))
    with_simd = load_gwy(path)
    monkeypatch.setattr(libraries, "pybase64", None)
    assert_identical(data, load_gwy(path))
    assert_identical(with_simd, load_gwy(path))
    assert Path(export_to_gwy(data, tmp_path / "b.gwy")).read_bytes() == path.read_bytes()


def test_scan_of_a_whole_buffer_finds_names_longer_than_a_search_piece(tmp_path: Path) -> None:
    """The walk searches a name's NUL a piece at a time: a long title and key still read whole."""
    title = "t" * 70_000
    container = GwyContainer()
    container["/0/data"] = GwyDataField(np.ones((2, 3)), si_unit_xy="m", si_unit_z="m")
    container["/0/data/title"] = title
    container["/x/" + "k" * 3000] = "v"
    path = tmp_path / "long.gwy"
    container.tofile(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_gwy(path)["title"] == title
    body = memoryview(path.read_bytes())[4:]
    assert len(gwy.scan(body, "x")) == 3
