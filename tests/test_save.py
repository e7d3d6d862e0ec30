"""``tmd_nb.save`` (one entry point for every format) and ``tmd_nb.height_map_of``."""

from __future__ import annotations

import datetime as dt
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tmd_nb
from tmd_nb import MetadataNotStoredWarning, height_map_of, load, save
from tmd_nb.formats import npz as codec
from tmd_nb.formats import registry
from tmd_nb.formats.base import Format
from tmd_nb.heightmap import split_height_map

HEIGHTS = np.arange(12, dtype=np.float32).reshape(3, 4)
SCAN = {"height_map": HEIGHTS, "units": "um", "when": dt.date(2024, 5, 1)}
# The formats as the registry declares them: a new format is expected wherever save() lists formats.
WRITABLE = [f for f in registry.FORMATS if getattr(f, "save", None) is not None]
#: Each height unit a loaded file may report, in micrometres.
MICROMETRES = {"um": 1.0, "mm": 1000.0, "m": 1e6}


def listed(items: list[str]) -> str:
    """``"a, b or c"``, as the messages list choices."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


@pytest.mark.parametrize("ext", [".npz", ".NPZ"])
def test_npz_by_extension_keeps_metadata(tmp_path: Path, ext: str) -> None:
    written = save(SCAN, tmp_path / f"scan{ext}")
    assert written == str(tmp_path / f"scan{ext}")
    back = load(written)
    assert back.keys() == SCAN.keys() and back["when"] == SCAN["when"]
    assert np.array_equal(back["height_map"], HEIGHTS) and back["height_map"].dtype == np.float32


def test_npy_and_tmd_by_extension(tmp_path: Path) -> None:
    save(HEIGHTS, tmp_path / "a.npy")
    assert np.array_equal(np.load(tmp_path / "a.npy"), HEIGHTS)
    save({"height_map": HEIGHTS, "x_length": 2.0}, tmp_path / "a.tmd")
    back = tmd_nb.load_tmd(tmp_path / "a.tmd")
    assert np.array_equal(back["height_map"], HEIGHTS) and back["x_length"] == 2.0


@pytest.mark.parametrize("fmt", WRITABLE, ids=[f.name for f in WRITABLE])
def test_explicit_format_wins_over_the_extension(tmp_path: Path, fmt: Format) -> None:
    target = tmp_path / "scan.data"  # an extension save() could not guess from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataNotStoredWarning)
        assert save(SCAN, target, format=fmt.name) == str(target)
    # what load() recognises from the content is the format asked for, not the one the name suggests
    assert registry.recognise(target) is fmt
    back = fmt.load(target)
    assert load(target).keys() == back.keys()
    # SCAN is in micrometres; a file that holds another unit says so, and is converted by the exact factor
    unit = back.get("height_unit") or back.get("units") or "um"
    expected = (HEIGHTS / MICROMETRES[unit]).astype(back["height_map"].dtype)
    assert np.array_equal(back["height_map"], expected), unit


@pytest.mark.parametrize("name", ["scan.txt", "scan", "scan.npz.bak", "archive.zip"])
def test_unknown_extension_is_refused_before_any_file_is_touched(tmp_path: Path, name: str) -> None:
    extensions = listed(list(registry.extensions(writing=True)))
    with pytest.raises(ValueError, match=f"cannot tell the format of .*use {re.escape(extensions)}, or pass format="):
        save(SCAN, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_npz_options_elsewhere_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'hdf5'"):
        save(SCAN, tmp_path / "scan.npz", format="hdf5")
    for fmt in WRITABLE:
        if "compress" not in fmt.options:
            takers = " and ".join(f.title for f in WRITABLE if "compress" in f.options)
            with pytest.raises(ValueError, match=f"^compress applies to {takers} only, not {fmt.title}$"):
                save(HEIGHTS, tmp_path / f"scan{fmt.extensions[0]}", compress=False)
        if "level" not in fmt.options:
            takers = " and ".join(f.title for f in WRITABLE if "level" in f.options)
            with pytest.raises(ValueError, match=f"^level applies to {takers} only, not {fmt.title}$"):
                save(HEIGHTS, tmp_path / f"scan{fmt.extensions[0]}", level=3)
    with pytest.raises(ValueError, match="^level applies to NPZ and X3P only, not TMD$"):
        save(HEIGHTS, tmp_path / "scan.tmd", level=3)
    assert list(tmp_path.iterdir()) == []


def test_compress_and_level_reach_the_npz_writer(tmp_path: Path) -> None:
    data = {"height_map": np.zeros((200, 200)), "note": "x" * 1000}
    save(data, tmp_path / "stored.npz", compress=False)
    save(data, tmp_path / "fast.npz", level=1)
    save(data, tmp_path / "best.npz", level=9)
    with zipfile.ZipFile(tmp_path / "stored.npz") as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    for name in ("fast.npz", "best.npz"):
        with zipfile.ZipFile(tmp_path / name) as archive:
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    assert (tmp_path / "stored.npz").stat().st_size > 300_000 > (tmp_path / "fast.npz").stat().st_size
    # the same bytes as the writer called directly with the same options
    codec.export_to_npz(data, tmp_path / "direct.npz", level=9)
    with zipfile.ZipFile(tmp_path / "best.npz") as a, zipfile.ZipFile(tmp_path / "direct.npz") as b:
        assert [(i.filename, i.CRC, i.compress_size) for i in a.infolist()] == [
            (i.filename, i.CRC, i.compress_size) for i in b.infolist()
        ]


def test_progress_is_passed_through(tmp_path: Path) -> None:
    for name in (f"p{f.extensions[0]}" for f in WRITABLE):
        calls: list[tuple[int, int]] = []
        save(HEIGHTS, tmp_path / name, progress=lambda done, total, calls=calls: calls.append((done, total)))
        assert calls and calls[-1][0] == calls[-1][1] > 0, name


# .tmd honours "units" by converting into millimetres, so only "when" is lost there.
@pytest.mark.parametrize("name, unsaved", [("scan.npy", "'units', 'when'"), ("scan.tmd", r"tmd': 'when'; use")])
def test_npy_and_tmd_writers_still_warn_about_metadata_they_drop(tmp_path: Path, name: str, unsaved: str) -> None:
    with pytest.warns(MetadataNotStoredWarning, match=unsaved):
        save(SCAN, tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save(HEIGHTS, tmp_path / f"plain_{name}")  # nothing dropped, nothing said


# --------------------------------------------------------------------------- height_map_of


class Hostile(dict):
    def __contains__(self, key):
        raise RuntimeError("no peeking")


class Lying(dict):
    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        raise KeyError(key)


CASES = {
    "array": np.zeros((2, 3)),
    "int dict": {"height_map": np.ones((3, 3), dtype=int), "units": "um"},
    "bool": np.zeros((2, 2), dtype=bool),
    "complex": np.zeros((2, 2), dtype=np.complex64),
    "memmap-like view": np.zeros((4, 4))[::2],
    "1-D": np.zeros(3),
    "3-D": np.zeros((2, 2, 2)),
    "object": np.zeros((2, 2), dtype=object),
    "text": np.array([["a"]]),
    "structured": np.zeros((2, 2), dtype=[("a", "f4")]),
    "masked": np.ma.masked_array(np.zeros((2, 2))),
    "masked in dict": {"height_map": np.ma.masked_array(np.zeros((2, 2)))},
    "list": [[1.0, 2.0]],
    "dict without": {"z": np.zeros((2, 2))},
    "dict of list": {"height_map": [[1.0]]},
    "str": "height_map",
    "None": None,
}


@pytest.mark.parametrize("name", list(CASES))
def test_height_map_of_agrees_with_what_the_savers_accept(name: str) -> None:
    value = CASES[name]
    found = height_map_of(value)
    try:
        array, _ = split_height_map(value)
    except (TypeError, ValueError):
        assert found is None
    else:
        assert found is not None and found.shape == array.shape and found.dtype == array.dtype
        assert np.shares_memory(found, array)  # the same data, never a copy or a text


def test_height_map_of_never_raises_and_never_reads_values() -> None:
    assert height_map_of(Hostile(height_map=np.zeros((2, 2)))) is None
    assert height_map_of(Lying()) is None
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(100_000, 100_000), strides=(0, 0))
    found = height_map_of({"height_map": huge})  # 10**10 values: any read or str() would hang
    assert found is not None and found.shape == (100_000, 100_000) and np.shares_memory(found, huge)


def test_formats_are_recognised_in_menu_order_except_special_cases_first() -> None:
    order = registry.recognition_order()
    assert sorted(f.name for f in order) == sorted(registry.names())
    for f in registry.FORMATS:
        if f.within is not None:  # an X3P file is a zip archive too: X3P is tried before NPZ
            assert order.index(f) < order.index(registry.by_name(f.within)), f.name
    plain = [f for f in order if f.within is None]
    assert plain == [f for f in registry.FORMATS if f.within is None]
